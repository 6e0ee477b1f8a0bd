"""A point in monotonic time by which work must be done: one per scrape, shared by its requests."""

import time
from collections.abc import Callable
from typing import Self


class Deadline:
    """The moment, on ``clock``, after which a scrape's answer is worth nothing to Prometheus.

    Everything below reads it through :meth:`remaining`, never copies its moment: a shared
    fetch's deadline moves later while scrapes join it (see
    :mod:`exporter.collection.singleflight`), and each request's watchdog asks again.
    """

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._at = at
        self.clock = clock

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Self:
        """The deadline ``seconds`` from now."""
        return cls(clock() + seconds, clock)

    @property
    def at(self) -> float:
        """The moment itself, on ``clock``."""
        return self._at

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self.clock())

    @property
    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0
