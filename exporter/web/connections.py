"""The hardened connection machinery under the web server: no worker waits for a client.

cheroot's selector loop reads the TLS handshake and the request head without blocking
(``_HeadReadingConnections``); a worker gets a connection only once its head is in, and
one whose head has not come within ``header_timeout`` is closed. :class:`HardenedServer`
is cheroot's WSGI server with these connections; :mod:`exporter.web.server` wraps it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Final
from wsgiref.types import WSGIApplication

from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.makefile import MakeFile
from cheroot.ssl.builtin import BuiltinSSLAdapter

from exporter.web.framing import FramingCheckedHeaderReader
from exporter.web.head_reader import MAX_HEADER_BYTES, HeadReader
from exporter.web.web_config import WebConfig

_log = logging.getLogger(__name__)

_MAX_BODY_BYTES = 64 * 1024
# Connections waiting for their head beyond this many: the oldest is closed. Bounds the
# memory of buffered heads (64 KiB each at most) and the descriptors a flood can hold.
_MAX_WAITING_CONNECTIONS = 512
# How often the selector loop wakes to close connections past their head deadline.
_SWEEP_SECONDS = 0.25
_WAKE: Final = object()  # the selector key of the stop() wake-up socket
_READ_CHUNK = 16 * 1024
# How long stop() lets in-flight requests finish before cutting their sockets.
_SHUTDOWN_GRACE_SECONDS = 3


class _HardenedRequest(cheroot_server.HTTPRequest):
    """A request whose headers are framing-checked and whose body is never waited for."""

    header_reader = FramingCheckedHeaderReader()

    def read_request_headers(self) -> bool:
        """Read the headers as cheroot does; a request with a body ends its connection.

        cheroot reads an unread body before answering on a kept-alive connection, and a
        client can drip that body for ever; no route here reads one.
        """
        if not super().read_request_headers():  # type: ignore[no-untyped-call]
            return False
        if self.chunked_read or int(self.inheaders.get(b"Content-Length", 0)) > 0:
            self.close_connection = True
        return True


def _answer_plain_http(sock: ssl.SSLSocket) -> None:
    # Tell a person who typed http:// what went wrong, on the raw socket below TLS.
    body = b"This server speaks HTTPS only.\n"
    head = f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with contextlib.suppress(OSError):
        socket.socket.sendall(sock, head.encode() + body)


class _HardenedConnection(cheroot_server.HTTPConnection):
    """A cheroot connection that can wait for its head in the selector loop."""

    RequestHandlerClass = _HardenedRequest

    def __init__(self, server: HardenedServer, sock: socket.socket, makefile: Any) -> None:
        super().__init__(server, sock, makefile)
        self.rfile: HeadReader = HeadReader(sock, self.rbufsize)
        self.handshaken = not isinstance(sock, ssl.SSLSocket)
        # Monotonic time by which the head must be complete; set on every wait for one.
        self.head_deadline = math.inf


class _CloseConnectionError(Exception):
    """The peer closed the connection, or failed the handshake or its certificate check."""


class _HeadReadingConnections:
    """Replaces cheroot's ConnectionManager: one selector loop that accepts connections,
    completes TLS handshakes and reads request heads without blocking, and hands a
    connection to the worker pool only once its head is complete.

    Every connection registered here waits for a head and has a deadline; the loop closes
    those past it. Workers give kept-alive connections back through ``put``.
    """

    def __init__(self, server: HardenedServer) -> None:
        self.server = server
        self._selector = selectors.DefaultSelector()
        # Guards the selector's registrations, which workers change through put().
        self._lock = threading.Lock()
        self._selector.register(server.socket, selectors.EVENT_READ, None)
        # stop() writes here, so that the loop ends now rather than at its next sweep.
        self._wake, self._waker = socket.socketpair()
        self._selector.register(self._wake, selectors.EVENT_READ, _WAKE)
        self._stop_requested = False
        self._serving = threading.Event()

    @property
    def can_add_keepalive_connection(self) -> bool:
        """Whether a worker may keep its connection open after answering."""
        limit = self.server.keep_alive_conn_limit
        return limit is None or self._waiting_count() < limit

    def put(self, conn: _HardenedConnection) -> None:
        """Take back a kept-alive connection to wait for its next request head."""
        conn.last_used = time.time()
        self._wait_for_head(conn)
        if conn.rfile.head_complete():  # a pipelined request already at hand
            self._hand_over(conn)
        else:
            self._register(conn, selectors.EVENT_READ)

    def run(self, expiration_interval: float) -> None:
        """Serve until ``stop``; ``expiration_interval`` is cheroot's and unused here."""
        self._serving.set()
        try:
            next_sweep = time.monotonic()
            while not self._stop_requested:
                for key, _ in self._selector.select(timeout=_SWEEP_SECONDS):
                    if key.data is None:
                        self._accept()
                    elif key.data is not _WAKE:
                        self._advance(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._close_expired(now)
                    next_sweep = now + _SWEEP_SECONDS
        finally:
            self._serving.clear()

    def stop(self) -> None:
        """Ask the loop to end, wake it, and wait until it has."""
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")
        while self._serving.is_set():
            time.sleep(0.01)

    def close(self) -> None:
        """Close every waiting connection and the selector."""
        for conn in self._waiting():
            conn.close()
        self._selector.close()
        self._wake.close()
        self._waker.close()

    def _accept(self) -> None:
        try:
            sock, address = self.server.socket.accept()
        except OSError:  # the client gave up first, or the server socket is closing
            return
        makefile: Any = MakeFile
        if self.server.ssl_adapter is not None:
            try:
                sock, _ = self.server.ssl_adapter.wrap(sock)
            except OSError:  # reset before it could be wrapped
                sock.close()
                return
            makefile = self.server.ssl_adapter.makefile
        conn = self.server.ConnectionClass(self.server, sock, makefile)
        if isinstance(address, tuple):
            conn.remote_addr, conn.remote_port = address[0], address[1]
        if self._waiting_count() >= _MAX_WAITING_CONNECTIONS:
            self._drop(min(self._waiting(), key=lambda waiting: waiting.head_deadline))
        self._wait_for_head(conn)
        self._register(conn, selectors.EVENT_READ)

    def _wait_for_head(self, conn: _HardenedConnection) -> None:
        conn.head_deadline = time.monotonic() + self.server.header_timeout
        conn.rfile.start_head()
        conn.socket.settimeout(0.0)

    def _advance(self, conn: _HardenedConnection) -> None:
        try:
            events = _read_head(conn, self.server)
        except (_CloseConnectionError, OSError) as err:
            _log.debug("closing %s: %s", conn.remote_addr, err or type(err).__name__)
            self._drop(conn)
            return
        self._unregister(conn)
        if events:
            self._register(conn, events)
        else:
            self._hand_over(conn)

    def _hand_over(self, conn: _HardenedConnection) -> None:
        conn.head_deadline = math.inf
        conn.socket.settimeout(self.server.timeout)
        self.server.process_conn(conn)

    def _close_expired(self, now: float) -> None:
        for conn in self._waiting():
            if conn.head_deadline < now:
                _log.debug("closing %s: request head not complete in time", conn.remote_addr)
                self._drop(conn)

    def _drop(self, conn: _HardenedConnection) -> None:
        self._unregister(conn)
        conn.close()

    def _register(self, conn: _HardenedConnection, events: int) -> None:
        with self._lock:
            self._selector.register(conn.socket, events, conn)

    def _unregister(self, conn: _HardenedConnection) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.socket)

    def _waiting(self) -> list[_HardenedConnection]:
        with self._lock:
            keys = list(self._selector.get_map().values())
        return [key.data for key in keys if key.data is not None and key.data is not _WAKE]

    def _waiting_count(self) -> int:
        with self._lock:
            return len(self._selector.get_map()) - 2  # the listening and the wake-up socket


def _read_head(conn: _HardenedConnection, server: HardenedServer) -> int:
    """Handshake and read what has arrived, never blocking.

    Returns the selector events to wait for next, or 0 once the head is complete.
    Raises _CloseConnectionError or OSError when the connection is to be closed.
    """
    sock = conn.socket
    if not conn.handshaken:
        waiting_for = _handshake(conn, server)
        if waiting_for:
            return waiting_for
    while not conn.rfile.head_complete():
        try:
            chunk = sock.recv(_READ_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_WRITE
        if not chunk:
            raise _CloseConnectionError("closed by the peer")
        conn.rfile.source.received += chunk
    return 0


def _handshake(conn: _HardenedConnection, server: HardenedServer) -> int:
    sock = conn.socket
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except ssl.SSLError as err:
        if err.reason == "HTTP_REQUEST":
            _answer_plain_http(sock)
        raise _CloseConnectionError(f"TLS handshake failed: {err.reason}") from None
    if not server.client_certificate_allowed(sock.getpeercert() or {}):
        raise _CloseConnectionError("client certificate has no allowed SAN")
    conn.ssl_env = server.ssl_adapter.get_environ(sock)
    conn.handshaken = True
    return 0


class _DeferredHandshakeAdapter(BuiltinSSLAdapter):
    """Wraps accepted sockets without a handshake; the selector loop does it, unblocking.

    ``wrap`` runs in the accept loop, where a blocking handshake would stall every other
    connection behind one silent client.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        # BuiltinSSLAdapter.__init__ insists on certificate file names and builds its own
        # context; the Adapter base only records attributes.
        super(BuiltinSSLAdapter, self).__init__(None, None)
        self.context = context

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        """Wrap the socket for TLS without handshaking; no peer details exist yet."""
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, self.get_environ(wrapped)

    # cheroot's stubs declare Adapter.get_environ without the socket its subclasses take.
    def get_environ(self, sock: ssl.SSLSocket) -> dict[str, str]:  # type: ignore[override]
        """WSGI environ entries; protocol, cipher and client verdict once handshaken."""
        environ = {"wsgi.url_scheme": "https", "HTTPS": "on"}
        cipher = sock.cipher()
        if cipher is not None:
            environ["SSL_PROTOCOL"] = cipher[1]
            environ["SSL_CIPHER"] = cipher[0]
            environ["SSL_CLIENT_VERIFY"] = "SUCCESS" if sock.getpeercert() else "NONE"
        return environ


class HardenedServer(cheroot_wsgi.Server):
    """cheroot's WSGI server with our connections, head reading loop and logging."""

    ConnectionClass = _HardenedConnection
    _connections: Any  # cheroot's ConnectionManager until prepare() puts ours in

    def __init__(
        self,
        bind_addr: tuple[str, int],
        app: WSGIApplication,
        *,
        threads: int,
        server_name: str,
        header_timeout: float,
        web_config: WebConfig | None,
    ) -> None:
        super().__init__(
            bind_addr,
            app,
            numthreads=threads,
            max=threads,
            server_name=server_name,
            timeout=math.ceil(header_timeout),
            shutdown_timeout=_SHUTDOWN_GRACE_SECONDS,
            request_queue_size=128,
        )
        self.header_timeout = header_timeout
        self.max_request_header_size = MAX_HEADER_BYTES
        self.max_request_body_size = _MAX_BODY_BYTES
        self._web_config = web_config
        context = web_config.ssl_context() if web_config is not None else None
        if context is not None:
            self.ssl_adapter = _DeferredHandshakeAdapter(context)

    def prepare(self) -> None:
        """Bind and start the workers as cheroot does, with our selector loop."""
        super().prepare()
        self._connections.close()  # cheroot's own, which has no connection yet
        self._connections = _HeadReadingConnections(self)

    def client_certificate_allowed(self, peer_certificate: dict[str, Any]) -> bool:
        """Whether the client certificate passes ``client_allowed_sans``."""
        if self._web_config is None:
            return True
        return self._web_config.client_certificate_allowed(peer_certificate)

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """Send cheroot's messages to logging; below WARNING they are client faults."""
        _log.log(
            level if level >= logging.WARNING else logging.DEBUG,
            "%s",
            msg,
            exc_info=traceback,
        )
