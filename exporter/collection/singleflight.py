"""One upstream fetch per key at a time, shared by every caller, with an optional reuse window.

Two Prometheus replicas (or a person with curl) scraping at once must not double
the load on the gateway; and with a cache window, answers are reused for that long.
Callers get a :class:`~concurrent.futures.Future` and wait on it for as long as their
own deadline allows: a caller that gives up does not cancel the fetch others wait on.

A shared fetch belongs to no caller: it runs until the latest deadline of the callers
waiting for it, moved later as each joins, and no longer. A client asking for 0.1 s
must not fail the patient scrapes that join its fetch; and once no caller waits, nothing
of the fetch goes on (its requests are cut at that deadline): a hostile exchange cannot
outlive the scrapes, nor hold every later one on a fetch that started long before. A
fetch whose deadline has passed is never joined; the next caller starts a fresh one.
"""

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ShutdownError(Exception):
    """The fetch was abandoned because the exporter is shutting down."""


@dataclass(frozen=True)
class _Cached(Generic[V]):
    value: V
    stored_at: float


class _SharedDeadline(Deadline):
    """A shared fetch's deadline: the latest of its callers', moved later as each joins."""

    def join(self, caller: Deadline) -> bool:
        """Move this deadline to ``caller``'s if that is later; False once it has passed,
        for good (a fetch out of time is never joined again)."""
        if self.expired:
            return False
        self._at = max(self._at, self.clock() + caller.remaining())
        return True


@dataclass(frozen=True, eq=False)
class _InFlight(Generic[V]):
    """A running fetch: what callers wait on, and the deadline the fetch itself runs on."""

    future: "Future[V]"
    deadline: _SharedDeadline


class SharedFetches(Generic[K, V]):
    """Runs ``load(deadline)`` once per key for all concurrent callers; reuses successes.

    Successes are reused for ``ttl`` s. Each fetch runs on the latest deadline of the
    callers waiting for it; ``clock`` is the monotonic clock of both that deadline and
    the cache.
    """

    def __init__(
        self,
        ttl: float,
        max_workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._cache: dict[K, _Cached[V]] = {}
        self._in_flight: dict[K, _InFlight[V]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fetch")

    def get(self, key: K, load: Callable[[Deadline], V], deadline: Deadline) -> "Future[V]":
        """The future result for ``key``: cached, being fetched in time, or newly started.

        The caller waits for it until ``deadline``: the fetch runs until then at least,
        unless it ends sooner.
        """
        with self._lock:
            if self._closed:
                return _failed(ShutdownError("the exporter is shutting down"))
            cached = self._cache.get(key)
            if cached is not None and self._clock() - cached.stored_at < self._ttl:
                done: Future[V] = Future()
                done.set_result(cached.value)
                return done
            running = self._in_flight.get(key)
            if running is None or not running.deadline.join(deadline):
                # An expired fetch can only fail now; it is left to end on its own.
                shared = _SharedDeadline.after(deadline.remaining(), self._clock)
                running = _InFlight(Future(), shared)
                self._in_flight[key] = running
                self._pool.submit(self._run, key, load, running)
            return running.future

    def forget(self, keys: Iterable[K]) -> None:
        """Drop the cached answers of ``keys``, which nobody will ask for again."""
        with self._lock:
            for key in keys:
                self._cache.pop(key, None)

    def _run(self, key: K, load: Callable[[Deadline], V], running: _InFlight[V]) -> None:
        try:
            value = load(running.deadline)
        except ApiError as error:
            # The failure, not its traceback: error -> traceback -> this frame -> the future
            # -> error would be a cycle, holding the failed collection's frames (its pages,
            # its half-filled store) until the cycle collector ran.
            _settle(running.future, error=error.detached())
        except BaseException as error:  # a bug of ours too goes to the waiters
            # With its traceback, which is logged, but not the locals of the frames it
            # passed through. The traceback still prints in full.
            traceback.clear_frames(error.__traceback__)
            _settle(running.future, error=error)
        else:
            if self._ttl > 0:
                with self._lock:
                    self._cache[key] = _Cached(value, self._clock())
            _settle(running.future, value=value)
        finally:
            with self._lock:
                # Only this fetch's own entry: a newer fetch may have replaced it.
                if self._in_flight.get(key) is running:
                    del self._in_flight[key]

    def close(self) -> None:
        """Refuse new work and fail every pending wait at once with :class:`ShutdownError`.

        Scrapes waiting on a fetch answer straight away (their targets ``up 0``) instead of
        holding the web server's threads until the gateway answers; the fetch threads
        themselves end when their requests do.
        """
        with self._lock:
            self._closed = True
            running = list(self._in_flight.values())
            self._in_flight.clear()
        for fetch in running:
            _settle(fetch.future, error=ShutdownError("the exporter is shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)


def _failed(error: BaseException) -> "Future[V]":
    future: Future[V] = Future()
    future.set_exception(error)
    return future


def _settle(
    future: "Future[V]", *, value: V | None = None, error: BaseException | None = None
) -> None:
    """Set the outcome unless :meth:`SharedFetches.close` already did (its outcome stands)."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]
