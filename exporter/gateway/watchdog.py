"""A deadline for the whole HTTP exchange, enforced by shutting the request's socket down.

Socket timeouts bound each read, not an exchange: a gateway that drips the status line,
the headers, the chunk framing or the trailers a byte at a time, or floods interim
``100 Continue`` answers, keeps a request alive for as long as it likes. Here one
:class:`Watchdog` thread keeps a heap of deadlines and, when one passes, calls
``shutdown(SHUT_RDWR)`` on every socket of that request: whatever call the request's
thread is blocked in (connect, TLS handshake, send, any read) returns at once, and the
gateway sees the connection closed.

Sockets reach the request's :class:`RequestGuard` through :func:`attach`, which the
gateway's connections (:mod:`exporter.gateway.session`) call for each socket they create or
reuse, with the guard that the calling thread holds (:meth:`Watchdog.guard` sets it for
the thread). The guard keeps a duplicate of each socket's descriptor: ``shutdown`` acts
on the socket, not on the descriptor, so it reaches the connection even after TLS has
wrapped (and detached) the socket first created, and the duplicate can never be a
recycled descriptor.
"""

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Protocol

_current = threading.local()


class Closable(Protocol):
    """A connection, closed by its guard when the watchdog ended its request."""

    def close(self) -> None:
        """Close it for good: it must not be reused."""


class RequestGuard:
    """The sockets of one request and whether its deadline (or a close) has ended it."""

    def __init__(self, at: float) -> None:
        self.at = at
        self._lock = threading.Lock()
        self._attached: list[tuple[Closable, socket.socket]] = []
        self._fired = False
        self._released = False

    @property
    def fired(self) -> bool:
        """Whether the watchdog shut this request's sockets down."""
        with self._lock:
            return self._fired

    def attach(self, connection: Closable, sock: socket.socket) -> None:
        """Watch ``sock`` (of ``connection``); shut it down at once if the guard has fired."""
        try:
            watched = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return  # already closed: nothing left to end
        with self._lock:
            if not self._fired and not self._released:
                self._attached.append((connection, watched))
                return
            fired = self._fired
        if fired:
            _shutdown(watched)
        watched.close()

    def fire(self) -> None:
        """End the request: shut every socket down (from the watchdog's thread)."""
        with self._lock:
            if self._fired or self._released:
                return
            self._fired = True
            for _, watched in self._attached:
                _shutdown(watched)

    def release(self) -> None:
        """The request is over: stop watching; a fired request's connections are discarded."""
        with self._lock:
            self._released = True
            attached, self._attached = self._attached, []
            fired = self._fired
        for connection, watched in attached:
            if fired:
                # Shut down, it must not go back to the pool as if it could be reused.
                connection.close()
            watched.close()


class Watchdog:
    """One thread that fires every :class:`RequestGuard` whose deadline has passed."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, RequestGuard]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def guard(self, seconds: float) -> Iterator[RequestGuard]:
        """Watch this thread's request for ``seconds``; the guard says whether it fired."""
        guard = RequestGuard(time.monotonic() + seconds)
        with self._condition:
            if self._closed:
                guard.fire()
            else:
                heapq.heappush(self._heap, (guard.at, next(self._order), guard))
                self._start()
                self._condition.notify()
        previous = getattr(_current, "guard", None)
        _current.guard = guard
        try:
            yield guard
        finally:
            _current.guard = previous
            guard.release()

    def close(self) -> None:
        """End every request under way at once, and any started later; stop the thread."""
        with self._condition:
            self._closed = True
            guards = [guard for _, _, guard in self._heap]
            self._heap.clear()
            self._condition.notify()
        for guard in guards:
            guard.fire()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="api-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    # Released guards stay in the heap until due: firing them is a no-op.
                    heapq.heappop(self._heap)[2].fire()
                wait = self._heap[0][0] - now if self._heap else None
                self._condition.wait(wait)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the peer or the request's thread may have closed it
        sock.shutdown(socket.SHUT_RDWR)


def attach(connection: Closable, sock: socket.socket) -> None:
    """Have the calling thread's guard, if it holds one, watch ``sock`` of ``connection``."""
    guard: RequestGuard | None = getattr(_current, "guard", None)
    if guard is not None:
        guard.attach(connection, sock)
