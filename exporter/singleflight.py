"""One upstream fetch per key at a time, shared by every caller, with an optional reuse window.

Two Prometheus replicas (or a person with curl) scraping at once must not double
the load on the gateway; and with a cache window, answers are reused for that long.
Callers get a :class:`~concurrent.futures.Future` and wait on it for as long as their
own deadline allows: a caller that gives up does not cancel the fetch others wait on.
"""

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class _Cached(Generic[V]):
    value: V
    stored_at: float


class SharedFetches(Generic[K, V]):
    """Runs ``load()`` once per key for all concurrent callers; reuses successes for ``ttl`` s."""

    def __init__(
        self, ttl: float, max_workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[K, _Cached[V]] = {}
        self._in_flight: dict[K, Future[V]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fetch")

    def get(self, key: K, load: Callable[[], V]) -> Future[V]:
        """The future result for ``key``: cached, already being fetched, or newly started."""
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() - cached.stored_at < self._ttl:
                done: Future[V] = Future()
                done.set_result(cached.value)
                return done
            future = self._in_flight.get(key)
            if future is None:
                future = self._pool.submit(self._run, key, load)
                self._in_flight[key] = future
            return future

    def _run(self, key: K, load: Callable[[], V]) -> V:
        try:
            value = load()
            if self._ttl > 0:
                with self._lock:
                    self._cache[key] = _Cached(value, self._clock())
            return value
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def close(self) -> None:
        """Stop accepting work; fetches under way finish on their own deadlines."""
        self._pool.shutdown(wait=False, cancel_futures=True)
