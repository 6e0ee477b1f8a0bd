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

# The lowest pace a refusal leads to, and what each second without one gives back, as
# shares of the configured rate: back to the full rate in 20 s after the last refusal.
_FLOOR_SHARE = 1 / 32
_STEP_SHARE = 1 / 20
_BURST_SECONDS = 1.0


class RateLimit:
    """A client-side cap on requests per second, shared by every target and thread of an account.

    Requests are spaced ``1/rate`` seconds apart: each takes the next free slot, so
    that a fleet of replicas can stay under the gateway's limit (RetCode 153). A
    request whose slot would come after its deadline takes none and fails at once.
    ``rate`` 0 means no limit.

    A slot is when a request may go, not when it goes: a thread that wakes late for its
    slot (the interpreter busy rendering a scrape) would go out beside the requests of the
    next slots, and a second could then hold more requests than the rate. So a request
    also asks :meth:`hold` right before it goes, which keeps every two requests that went
    ``1/rate`` apart: no second ever holds more than ``rate + 1`` of them.

    The gateway's own refusal lowers the pace by itself: :meth:`refused` halves it
    (down to a floor of :data:`_FLOOR_SHARE` of the configured rate; once for the
    refusals of one second, which answer requests sent at the same pace), and every
    second without a refusal adds :data:`_STEP_SHARE` of the configured rate back, up
    to the configured rate: additive increase, multiplicative decrease.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._pace = rate
        self._clock = clock
        self._next_free = -math.inf
        self._last_gone = -math.inf  # when the last request went (see hold)
        self._lowered_at = -math.inf  # the last refusal that lowered the pace
        self._raised_at = -math.inf  # where the additive increase counts its seconds from
        self._lock = threading.Lock()

    @property
    def configured(self) -> float:
        """The configured requests per second (0: no limit)."""
        return self._rate

    @property
    def pace(self) -> float:
        """The requests per second allowed now (0: no limit)."""
        with self._lock:
            return self._recovered(self._clock())

    def reserve(self, deadline: Deadline) -> float:
        """Take the next slot; return the seconds to wait for it, or raise a timeout."""
        if not self._rate:
            return 0.0
        with self._lock:
            now = self._clock()
            interval = 1.0 / self._recovered(now)
            wait = max(0.0, self._next_free - now)
            if wait >= deadline.remaining():
                raise _no_slot(wait)
            self._next_free = now + wait + interval
        return wait

    def hold(self, deadline: Deadline) -> float:
        """A request is about to go: 0 if it may (it is then counted as gone), else the
        seconds to wait before asking again, so that it goes at least ``1/pace`` after the
        request before it; a timeout if that is past its deadline."""
        if not self._rate:
            return 0.0
        with self._lock:
            now = self._clock()
            wait = self._last_gone + 1.0 / self._recovered(now) - now
            if wait <= 0:
                self._last_gone = now
                return 0.0
        if wait >= deadline.remaining():
            raise _no_slot(wait)
        return wait

    def refused(self) -> float | None:
        """The gateway refused a request for its rate (RetCode 153): halve the pace.

        Returns the new pace, or None when it was not lowered (no limit configured, or
        lowered a moment ago for a refusal of the same burst).
        """
        if not self._rate:
            return None
        with self._lock:
            now = self._clock()
            pace = self._recovered(now)
            if now - self._lowered_at < _BURST_SECONDS:
                return None
            self._pace = max(self._rate * _FLOOR_SHARE, pace / 2)
            self._lowered_at = self._raised_at = now
            return self._pace

    def _recovered(self, now: float) -> float:
        """The pace after the additive increase since the last refusal (under the lock)."""
        if self._pace >= self._rate:
            return self._rate
        steps = math.floor(max(0.0, now - self._raised_at))
        self._pace = min(self._rate, self._pace + self._rate * _STEP_SHARE * steps)
        self._raised_at += steps  # whole seconds counted: the fraction counts on
        return self._pace


def _no_slot(wait: float) -> ApiError:
    return ApiError(
        "timeout",
        f"the client's own rate limit leaves no slot within the deadline (next in {wait:.1f}s)",
    )


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
