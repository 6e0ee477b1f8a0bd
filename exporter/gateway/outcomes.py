"""What an API request can end as, the error that carries it, and the counts kept of both.

The client knows nothing of metrics: it counts its requests here, by action and outcome,
and whoever publishes metrics reads :meth:`RequestStats.snapshot`.
"""

import threading
from collections import Counter
from typing import Final, Literal, Self, get_args

from exporter.gateway.answers import ACTIONS

Outcome = Literal[
    "ok",
    "http_error",
    "timeout",
    "connection_error",
    "api_error",
    "invalid_response",
    "rate_limited",
]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)


class ApiError(Exception):
    """A request or a collection failed; ``reason`` is one of :data:`OUTCOMES` other than ok.

    ``request_id`` is the gateway's ``X-UCLOUD-REQUEST-UUID`` of the answer that failed,
    what the provider's support asks for; None without an answer, or when the header
    held anything but a plain id.
    """

    def __init__(self, reason: Outcome, detail: str, request_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Outcome = reason
        self.detail = detail
        self.request_id = request_id

    def detached(self) -> Self:
        """The same failure as a new error of the same class, free of this one's traceback
        and chained errors.

        An error held past the frame that caught it (a failed page) is held detached, and
        ``raise error.detached()`` raises one again: the copy is bound to no frame it
        passes through, so no reference cycle (error, traceback, frame, error) keeps those
        frames' locals (a page's bytes, a half-filled store) until the cycle collector runs.
        """
        copy = type(self).__new__(type(self))
        copy.args = self.args
        copy.__dict__.update(self.__dict__)  # reason, detail, request_id, a subclass' own
        return copy


class RequestStats:
    """Counts of API requests by action and outcome since start, safe from many threads."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, Outcome]] = Counter()
        self._lock = threading.Lock()

    def record(self, action: str, outcome: Outcome) -> None:
        """Count one request of ``action`` that ended with ``outcome``."""
        with self._lock:
            self._counts[action, outcome] += 1

    def snapshot(self) -> dict[tuple[str, Outcome], int]:
        """Every pair of :data:`~exporter.gateway.answers.ACTIONS` and :data:`OUTCOMES`,
        zeros included.

        Action-major, in the order of both tuples, so that an exposition built from it
        is stable.
        """
        with self._lock:
            return {
                (action, outcome): self._counts[action, outcome]
                for action in ACTIONS
                for outcome in OUTCOMES
            }
