"""A time limit for the whole HTTP exchange, enforced by shutting the request's socket down.

Socket timeouts bound each read, not an exchange: a gateway that drips the status line,
the headers, the chunk framing or the trailers a byte at a time, or floods interim
``100 Continue`` answers, keeps a request alive for as long as it likes. Here each
request has a :class:`RequestGuard`, which the :class:`Watchdog`'s one thread fires once
the request's time is up, calling ``shutdown(SHUT_RDWR)`` on every socket of that
request: whatever call the request's thread is blocked in (connect, TLS handshake, a
proxy's CONNECT, send, any read) returns at once. The socket is set to linger for 0 s
first, so that its close, when the request's thread lets go of it, is a reset rather than a
FIN: a gateway whose sends wait on a full window (a flood the client stopped reading) would
learn of a FIN only at its next zero-window probe, which TCP backs off to many seconds, and
keep writing until then; a reset it sees at once. A connection cut this way is seen
dropped when it is next taken from the pool, and replaced. The time a request has left is
asked again whenever it seemed up: it may have moved on (a shared fetch's deadline moves
later as scrapes join it).

Sockets reach the guard through :class:`GuardedAdapter`, a requests ``HTTPAdapter`` whose
urllib3 connections attach each socket they create or reuse to the guard that the
calling thread holds (:meth:`Watchdog.guard` sets it for the thread). The guard keeps a
duplicate of each socket's descriptor: ``shutdown`` acts on the socket, not on the
descriptor, so it reaches the connection even after TLS has wrapped (and detached) the
socket urllib3 first created, and the duplicate can never be a recycled descriptor.

The hooks, written for urllib3 2.x and requests 2.32 onwards (pinned in pyproject.toml):
``HTTPAdapter.init_poolmanager`` and ``proxy_manager_for`` (requests' documented points
for subclasses) give each pool manager, direct or through a proxy, the guarded pool
classes through ``PoolManager.pool_classes_by_scheme``; those pools' ``ConnectionCls``
overrides ``HTTPConnection._new_conn``, the one method that creates a connection's
socket (before a proxy's CONNECT and before the TLS handshake), and ``request``, where a
kept-alive connection is reused.
"""

import contextlib
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from requests.exceptions import InvalidSchema
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:  # urllib3 defines it for type checkers only
    from urllib3._base_connection import BaseHTTPConnection

_current = threading.local()
# SO_LINGER on, for 0 seconds: close() discards what is unsent and sends a reset.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class RequestGuard:
    """The sockets of one request and whether its deadline (or a close) has ended it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._fired = False
        self._released = False

    @property
    def fired(self) -> bool:
        """Whether the watchdog shut this request's sockets down."""
        with self._lock:
            return self._fired

    def attach(self, sock: socket.socket) -> None:
        """Watch ``sock``; shut it down at once if the guard has fired."""
        try:
            watched = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return  # already closed: nothing left to end
        with self._lock:
            if not self._fired and not self._released:
                self._watched.append(watched)
                return
            fired = self._fired
        if fired:
            _cut(watched)
        watched.close()

    def fire(self) -> None:
        """End the request: shut every socket down (from the timer's thread)."""
        with self._lock:
            if self._fired or self._released:
                return
            self._fired = True
            for watched in self._watched:
                _cut(watched)

    def release(self) -> None:
        """The request is over: stop watching."""
        with self._lock:
            self._released = True
            watched, self._watched = self._watched, []
        for sock in watched:
            sock.close()


class Watchdog:
    """Fires each :class:`RequestGuard` once its request's time is up; :meth:`close` fires
    them all.

    One thread, started with the first request, watches every request of a client.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._running: dict[RequestGuard, Callable[[], float]] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        # When the watching thread wakes next, on the monotonic clock (inf: not before a
        # new request): a request whose time runs out later needs no wake-up of its own.
        self._next_wake = math.inf

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: every request ends at once."""
        with self._wake:
            return self._closed

    @contextlib.contextmanager
    def guard(self, time_left: Callable[[], float]) -> Iterator[RequestGuard]:
        """Watch this thread's request until ``time_left()`` is 0; the guard says whether
        it fired."""
        guard = RequestGuard()
        with self._wake:
            if self._closed:
                guard.fire()
            else:
                self._running[guard] = time_left
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name="api-watchdog", daemon=True
                    )
                    self._thread.start()
                elif time.monotonic() + time_left() < self._next_wake:
                    self._wake.notify()
        previous = getattr(_current, "guard", None)
        _current.guard = guard
        try:
            yield guard
        finally:
            _current.guard = previous
            with self._wake:
                self._running.pop(guard, None)
            guard.release()

    def close(self) -> None:
        """End every request under way at once, and any started later."""
        with self._wake:
            self._closed = True
            running, self._running = list(self._running), {}
            self._wake.notify()
        for guard in running:
            guard.fire()

    def _watch(self) -> None:
        """Fire the guards whose time is up; sleep until the next one may be."""
        with self._wake:
            while not self._closed:
                soonest: float | None = None
                for guard, time_left in list(self._running.items()):
                    left = time_left()
                    if left <= 0:
                        del self._running[guard]
                        guard.fire()
                    elif soonest is None or left < soonest:
                        soonest = left
                now = time.monotonic()
                self._next_wake = math.inf if soonest is None else now + soonest
                self._wake.wait(soonest)


def _cut(sock: socket.socket) -> None:
    """End the connection now and make its close a reset (see the module's docstring)."""
    # Each on its own: the peer or the request's thread may have closed the socket already.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _attach(sock: socket.socket | None) -> None:
    guard: RequestGuard | None = getattr(_current, "guard", None)
    if guard is not None and sock is not None:
        guard.attach(sock)


class _GuardedHTTPConnection(HTTPConnection):
    """Attaches its new socket, and its kept-alive one when reused, to the thread's guard."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self.sock)  # None for a new connection: _new_conn attaches it
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """The same for HTTPS: the raw socket is attached before the TLS handshake starts."""


class _ClosingDroppedConnections(HTTPConnectionPool):
    """A connection put back already dropped is closed now, not at its next use.

    A guard's shutdown can pass for the end of an answer (a flood of trailers reads as
    complete once it is cut), and urllib3 then puts the connection back in its pool: the
    socket, shut down but open, would hold the gateway's end until the pool next hands it
    out, and a gateway still writing would see no close at all.
    """

    def _put_conn(self, conn: "BaseHTTPConnection | None") -> None:
        if isinstance(conn, HTTPConnection) and conn.sock is not None and not conn.is_connected:
            conn.close()
        super()._put_conn(conn)


class _GuardedHTTPConnectionPool(_ClosingDroppedConnections):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(_ClosingDroppedConnections, HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def _guarded(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {
        "http": _GuardedHTTPConnectionPool,
        "https": _GuardedHTTPSConnectionPool,
    }
    return manager


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections report their sockets to :class:`Watchdog` guards,
    directly or through an HTTP(S) proxy.

    A SOCKS proxy is refused: its connections are urllib3's own, which no guard would watch.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Build the pool manager, with pools of guarded connections."""
        super().init_poolmanager(*args, **kwargs)
        _guarded(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        """The manager of ``proxy``'s pools, of guarded connections too."""
        if proxy.lower().startswith("socks"):
            raise InvalidSchema("SOCKS proxies are not supported: use an HTTP(S) proxy")
        return _guarded(super().proxy_manager_for(proxy, **proxy_kwargs))
