"""The limits a request or a collection runs within, besides its deadline: rate and bytes.

A :class:`RateLimit` spaces every request of the process; a :class:`ByteBudget` bounds
the bytes of one collection's answers (every request of it: pages and lookups alike), and
travels with its deadline as a :class:`CollectionDeadline`, through code that needs to
know of neither.
"""

import math
import threading
import time
from collections.abc import Callable

from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError


class RateLimit:
    """A client-side cap on requests per second, shared by every target and thread.

    Requests are spaced ``1/rate`` seconds apart: each takes the next free slot, so
    that a fleet of replicas can stay under the gateway's limit (RetCode 153). A
    request whose slot would come after its deadline takes none and fails at once.
    ``rate`` 0 means no limit.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next_free = -math.inf
        self._lock = threading.Lock()

    def reserve(self, deadline: Deadline) -> float:
        """Take the next slot; return the seconds to wait for it, or raise a timeout."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._next_free - now)
            if wait >= deadline.remaining():
                raise ApiError(
                    "timeout",
                    f"the client's own rate limit leaves no slot within the deadline "
                    f"(next in {wait:.1f}s)",
                )
            self._next_free = now + wait + self._interval
        return wait


class ByteBudget:
    """The bytes that one collection's answers may still use, shared by its page threads."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """The bytes counted so far."""
        return self._used

    def spend(self, size: int) -> None:
        """Count ``size`` bytes read; past the limit, the collection fails."""
        with self._lock:
            self._used += size
            exceeded = self._used > self._limit
        if exceeded:
            raise ApiError(
                "invalid_response",
                f"answers exceed max_collection_bytes ({self._limit} bytes) for one collection",
            )


class CollectionDeadline(Deadline):
    """A collection's deadline, carrying the byte budget its requests share down to each read.

    It travels through the paging and retry code as the deadline it is, so that neither
    needs to know of the budget; its moment is always that of the deadline it wraps,
    which may move later.
    """

    def __init__(self, deadline: Deadline, budget: ByteBudget) -> None:
        super().__init__(deadline.at, deadline.clock)
        self._of = deadline
        self.budget = budget

    @property
    def at(self) -> float:
        """The wrapped deadline's moment, as it is now."""
        return self._of.at
