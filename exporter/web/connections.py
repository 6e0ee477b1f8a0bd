"""The hardened connection machinery under the web server: no worker waits for a client.

One selector loop accepts connections, completes TLS handshakes and reads request heads
without blocking (``_HeadReadingConnections``); a worker gets a connection only once its
head is in, and one whose head has not come within ``header_timeout`` is closed. A worker
writing an answer gives up, and closes the connection, once the answer has taken
``write_timeout`` (:mod:`exporter.web.answer_writer`).
:class:`HardenedServer` is cheroot's WSGI server with this loop; :mod:`exporter.web.server`
wraps it.

cheroot has no public hook for any of this: the loop stands in for the connection manager
that cheroot's server keeps in ``_connections``, and the connections and requests here
subclass cheroot's. :data:`CHEROOT_INTERNALS` lists every part of cheroot outside its
documented API that this relies on; a server refuses to start, naming what is missing,
on a cheroot that lacks one, rather than serve unhardened. pyproject.toml admits the
cheroot versions these were checked on.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Final
from wsgiref.types import WSGIApplication

import cheroot
from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.makefile import MakeFile, StreamReader, StreamWriter

from exporter.web.answer_writer import AnswerWriter
from exporter.web.framing import FramingCheckedHeaderReader
from exporter.web.head_reader import MAX_HEADER_BYTES, HeadReader
from exporter.web.web_config import WebConfig

_log = logging.getLogger(__name__)

# Each part of cheroot, outside its documented API, that the hardening relies on: the
# class, the member, and the names (attributes it touches, parameters it takes) that the
# member's code must still use for the hardening to hold.
CHEROOT_INTERNALS: Final[tuple[tuple[type, str, tuple[str, ...]], ...]] = (
    # The server drives the connection manager that prepare() makes; ours replaces it.
    (cheroot_server.HTTPServer, "prepare", ("_connections",)),
    (cheroot_server.HTTPServer, "serve", ("_connections", "run", "expiration_interval")),
    (cheroot_server.HTTPServer, "stop", ("_connections", "stop", "close")),
    (cheroot_server.HTTPServer, "put_conn", ("_connections", "put", "conn")),
    (
        cheroot_server.HTTPServer,
        "can_add_keepalive_connection",
        ("_connections", "can_add_keepalive_connection"),
    ),
    (cheroot_server.HTTPServer, "process_conn", ("conn",)),
    (cheroot_server.HTTPServer, "ConnectionClass", ()),
    (cheroot_server.HTTPServer, "keep_alive_conn_limit", ()),
    (cheroot_server.HTTPServer, "error_log", ("msg", "level", "traceback")),
    # A connection reads its requests from the rfile that ours puts in place.
    (
        cheroot_server.HTTPConnection,
        "__init__",
        ("server", "sock", "makefile", "rfile", "rbufsize", "wfile", "wbufsize", "socket"),
    ),
    (cheroot_server.HTTPConnection, "RequestHandlerClass", ()),
    (cheroot_server.HTTPConnection, "remote_addr", ()),
    (cheroot_server.HTTPConnection, "remote_port", ()),
    (cheroot_server.HTTPConnection, "ssl_env", ()),
    # A request parses its head with header_reader and says whether a body follows.
    (
        cheroot_server.HTTPRequest,
        "read_request_headers",
        ("header_reader", "inheaders", "chunked_read", "close_connection"),
    ),
    (cheroot_server.HTTPRequest, "header_reader", ()),
    (cheroot_server.HeaderReader, "__call__", ("rfile", "hdict", "readline")),
    # The head reader and the answer writer are cheroot's buffered reader and writer over
    # other raw streams.
    (StreamReader, "__init__", ("bytes_read",)),
    (StreamReader, "has_data", ()),
    (StreamWriter, "__init__", ("bytes_written",)),
)

_MAX_BODY_BYTES = 64 * 1024
# Connections waiting for their head beyond this many: the oldest is closed. Bounds the
# memory of buffered heads (64 KiB each at most) and the descriptors a flood can hold.
_MAX_WAITING_CONNECTIONS = 512
# How often the selector loop wakes to close connections past their head deadline, and
# to see whether stop() was asked for.
_SWEEP_SECONDS = 0.25
_READ_CHUNK = 16 * 1024
# How long stop() lets in-flight requests finish before cutting their sockets.
_SHUTDOWN_GRACE_SECONDS = 3
_ABSENT: Final = object()
_WAKE_UP: Final = object()  # the selector's data of the wake-up socket


class UnsupportedCherootError(Exception):
    """The installed cheroot lacks a part the hardening relies on; the message names it."""


def missing_cheroot_internals(
    internals: tuple[tuple[type, str, tuple[str, ...]], ...] = CHEROOT_INTERNALS,
) -> list[str]:
    """What of ``internals`` the installed cheroot lacks, one description each."""
    missing = []
    for owner, member, uses in internals:
        found = inspect.getattr_static(owner, member, _ABSENT)
        if found is _ABSENT:
            missing.append(f"{owner.__name__}.{member}")
            continue
        code = getattr(getattr(found, "fget", found), "__code__", None)
        names = set() if code is None else {*code.co_names, *code.co_varnames}
        if absent := [name for name in uses if name not in names]:
            missing.append(f"{owner.__name__}.{member} using {', '.join(absent)}")
    return missing


def _require_cheroot_internals() -> None:
    missing = missing_cheroot_internals()
    if missing:
        raise UnsupportedCherootError(
            f"cheroot {cheroot.__version__} lacks what the hardened web server relies on "
            f"({'; '.join(missing)}): install the cheroot version pyproject.toml names"
        )


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
        self.wfile: AnswerWriter = AnswerWriter(sock, self.wbufsize, server.write_timeout)
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
        # stop() writes a byte here, so that the loop ends now rather than at its next sweep.
        self._wake_up, self._wake_up_call = socket.socketpair()
        self._wake_up.setblocking(False)
        self._selector.register(self._wake_up, selectors.EVENT_READ, _WAKE_UP)
        self._stop_requested = False
        self._serving = threading.Event()

    @property
    def can_add_keepalive_connection(self) -> bool:
        """Whether a worker may keep its connection open after answering."""
        return self._waiting_count() < self.server.keep_alive_conn_limit

    def put(self, conn: _HardenedConnection) -> None:
        """Take back a kept-alive connection to wait for its next request head."""
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
                    elif key.data is not _WAKE_UP:
                        self._advance(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._close_expired(now)
                    next_sweep = now + _SWEEP_SECONDS
        finally:
            self._serving.clear()

    def stop(self) -> None:
        """Ask the loop to end and wait until it has, within one sweep."""
        self._stop_requested = True
        with contextlib.suppress(OSError):  # already woken: its buffer is full
            self._wake_up_call.send(b"\0")
        while self._serving.is_set():
            time.sleep(0.001)

    def close(self) -> None:
        """Close every waiting connection and the selector."""
        for conn in self._waiting():
            conn.close()
        self._selector.close()
        self._wake_up.close()
        self._wake_up_call.close()

    def _accept(self) -> None:
        try:
            sock, address = self.server.socket.accept()
        except OSError:  # the client gave up first, or the server socket is closing
            return
        if self.server.tls_context is not None:
            try:
                # No handshake here: a silent client would stall the loop; _read_head does it.
                sock = self.server.tls_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except OSError:  # reset before it could be wrapped
                sock.close()
                return
        conn = self.server.ConnectionClass(self.server, sock, MakeFile)
        conn.remote_addr, conn.remote_port = address[:2]
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
        conn.wfile.start_answer()
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
        return [key.data for key in keys if key.data not in (None, _WAKE_UP)]

    def _waiting_count(self) -> int:
        with self._lock:
            return len(self._selector.get_map()) - 2  # the listening socket, the wake-up


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
    assert server.web_config is not None  # TLS comes from a web config
    if not server.web_config.client_certificate_allowed(sock.getpeercert() or {}):
        raise _CloseConnectionError("client certificate has no allowed SAN")
    # What cheroot's own TLS adapter would tell the application (cheroot, knowing no
    # adapter, says http).
    conn.ssl_env = {"wsgi.url_scheme": "https", "HTTPS": "on"}
    conn.handshaken = True
    return 0


class HardenedServer(cheroot_wsgi.Server):
    """cheroot's WSGI server with our connections, head reading loop and logging.

    TLS is ours too: cheroot's TLS adapter handshakes in its accept loop, where one
    silent client would stall every other, so none is set and ``tls_context`` wraps.
    """

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
        write_timeout: float,
        web_config: WebConfig | None,
    ) -> None:
        _require_cheroot_internals()
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
        self.write_timeout = write_timeout
        self.max_request_header_size = MAX_HEADER_BYTES
        self.max_request_body_size = _MAX_BODY_BYTES
        self.web_config = web_config
        self.tls_context = web_config.ssl_context() if web_config is not None else None

    def prepare(self) -> None:
        """Bind and start the workers as cheroot does, with our selector loop."""
        super().prepare()
        self._connections.close()  # cheroot's own, which has no connection yet
        self._connections = _HeadReadingConnections(self)

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """Send cheroot's messages to logging; below WARNING they are client faults."""
        _log.log(
            level if level >= logging.WARNING else logging.DEBUG,
            "%s",
            msg,
            exc_info=traceback,
        )
