"""Production WSGI serving on cheroot, hardened where prometheus_client's server is weak.

* TLS handshakes run in a worker thread, not in cheroot's accept loop, so one client that
  connects and says nothing cannot stall every other HTTPS scrape.
* The request line and headers must arrive within ``header_timeout`` in total (cheroot's
  own timeout is per socket operation, which a client dripping one byte at a time never
  trips); the TLS handshake counts against the same deadline.
* At most ``max_requests`` application calls run at once; past that the answer is an
  immediate ``503``, as node_exporter's ``--web.max-requests``.
* Basic auth and extra response headers come from the web configuration file.

A worker thread is still held while a client sends its request head, so a flood of slow
clients can delay scrapes, but never for longer than ``header_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from exporter.webconfig import BasicAuth, WebConfig

_log = logging.getLogger(__name__)

REALM = "ucdn-prefetch-exporter"
# Workers beyond max_requests answer 503s and absorb clients still sending their heads.
_SPARE_THREADS = 16
_UNLIMITED_THREADS = 56
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024
# How long stop() lets in-flight requests finish before cutting their sockets.
_SHUTDOWN_GRACE_SECONDS = 3


class _HeadDeadline:
    """Shuts a socket down unless the request head has arrived within a deadline."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._finished = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _HeadDeadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            # The plain socket method: SSLSocket.shutdown would also drop the TLS object
            # under the worker thread reading through it. OSError: the client has gone.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class _HardenedRequest(cheroot_server.HTTPRequest):
    """Reads the request head (and completes the TLS handshake) under one deadline."""

    server: _CherootServer

    def parse_request(self) -> None:
        """Parse the head as cheroot does, but give up when the deadline passes."""
        with _HeadDeadline(self.conn.socket, self.server.header_timeout) as deadline:
            try:
                if self._handshake_done():
                    super().parse_request()
            except OSError:
                if not deadline.expired:
                    raise
        if deadline.expired:
            _log.debug("closing %s: request head not complete in time", self.conn.remote_addr)
            self.ready = False

    def _handshake_done(self) -> bool:
        sock = self.conn.socket
        if not isinstance(sock, ssl.SSLSocket) or sock.version() is not None:
            return True
        try:
            sock.do_handshake()
        except ssl.SSLError as err:
            _log.debug("TLS handshake with %s failed: %s", self.conn.remote_addr, err)
            if err.reason == "HTTP_REQUEST":
                _answer_plain_http(sock)
            return False
        except OSError as err:
            _log.debug("TLS handshake with %s failed: %s", self.conn.remote_addr, err)
            return False
        peer_certificate = sock.getpeercert() or {}
        if not self.server.client_certificate_allowed(peer_certificate):
            _log.debug("client certificate of %s has no allowed SAN", self.conn.remote_addr)
            return False
        self.conn.ssl_env = self.server.ssl_adapter.get_environ(sock)
        return True


def _answer_plain_http(sock: ssl.SSLSocket) -> None:
    # Tell a person who typed http:// what went wrong, on the raw socket below TLS.
    body = b"This server speaks HTTPS only.\n"
    head = f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with contextlib.suppress(OSError):
        socket.socket.sendall(sock, head.encode() + body)


class _HardenedConnection(cheroot_server.HTTPConnection):
    """A cheroot connection whose requests are ``_HardenedRequest``."""

    RequestHandlerClass = _HardenedRequest


class _DeferredHandshakeAdapter(BuiltinSSLAdapter):
    """Wraps accepted sockets without a handshake; ``_HardenedRequest`` does it later.

    cheroot calls ``wrap`` in its accept loop, where a blocking handshake would stall
    every other connection behind one silent client.
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


class _CherootServer(cheroot_wsgi.Server):
    """cheroot's WSGI server with our connection class and logging."""

    ConnectionClass = _HardenedConnection

    def __init__(
        self,
        bind_addr: tuple[str, int],
        app: WSGIApplication,
        *,
        threads: int,
        header_timeout: float,
        web_config: WebConfig | None,
    ) -> None:
        super().__init__(
            bind_addr,
            app,
            numthreads=threads,
            max=threads,
            server_name=REALM,
            timeout=math.ceil(header_timeout),
            shutdown_timeout=_SHUTDOWN_GRACE_SECONDS,
            request_queue_size=128,
        )
        self.header_timeout = header_timeout
        self.max_request_header_size = _MAX_HEADER_BYTES
        self.max_request_body_size = _MAX_BODY_BYTES
        self._web_config = web_config
        context = web_config.ssl_context() if web_config is not None else None
        if context is not None:
            self.ssl_adapter = _DeferredHandshakeAdapter(context)

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


def _plain_response(
    start_response: StartResponse,
    status: str,
    body: bytes,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *extra_headers,
    ]
    start_response(status, headers)
    return [body]


def _require_basic_auth(app: WSGIApplication, auth: BasicAuth) -> WSGIApplication:
    challenge = [("WWW-Authenticate", f'Basic realm="{REALM}"')]

    def authenticated(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if auth.check(environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        return _plain_response(start_response, "401 Unauthorized", b"Unauthorized\n", challenge)

    return authenticated


class _ReleaseOnClose:
    """A response body that gives its in-flight slot back when the server closes it."""

    def __init__(self, body: Iterable[bytes], release: Callable[[], None]) -> None:
        self._body = body
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        """Close the wrapped body, then release the slot exactly once."""
        try:
            close_body = getattr(self._body, "close", None)
            if close_body is not None:
                close_body()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _limit_in_flight(app: WSGIApplication, max_requests: int) -> WSGIApplication:
    slots = threading.BoundedSemaphore(max_requests)

    def limited(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not slots.acquire(blocking=False):
            return _plain_response(
                start_response, "503 Service Unavailable", b"Too many requests in flight\n"
            )
        try:
            body = app(environ, start_response)
        except BaseException:
            slots.release()
            raise
        return _ReleaseOnClose(body, slots.release)

    return limited


def _add_headers(app: WSGIApplication, headers: dict[str, str]) -> WSGIApplication:
    def with_headers(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start_with_headers(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            present = {name.lower() for name, _ in response_headers}
            extra = [(n, v) for n, v in headers.items() if n.lower() not in present]
            return start_response(status, response_headers + extra, exc_info)

        return app(environ, start_with_headers)

    return with_headers


class WebServer:
    """Serves a WSGI application over HTTP or HTTPS on cheroot, hardened as above."""

    def __init__(
        self,
        app: WSGIApplication,
        host: str,
        port: int,
        *,
        web_config: WebConfig | None = None,
        max_requests: int = 40,
        header_timeout: float = 10.0,
        threads: int | None = None,
    ) -> None:
        """Prepare the server; nothing listens until ``start`` or ``serve_forever``.

        ``max_requests`` 0 means no in-flight limit. ``threads`` defaults to
        ``max_requests`` plus spares, so that 503s can still be sent when the limit is hit.
        """
        if max_requests < 0 or header_timeout <= 0 or (threads is not None and threads < 1):
            raise ValueError("max_requests >= 0, header_timeout > 0 and threads >= 1 required")
        if threads is None:
            threads = max_requests + _SPARE_THREADS if max_requests else _UNLIMITED_THREADS
        self._host = host
        self._server = _CherootServer(
            (host, port),
            _wrap(app, web_config, max_requests),
            threads=threads,
            header_timeout=header_timeout,
            web_config=web_config,
        )
        self._thread: threading.Thread | None = None
        # Re-entrant: a signal handler calling stop() may interrupt start() on one thread.
        self._lock = threading.RLock()
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (the real one once started, even if 0 was asked for)."""
        return int(self._server.bind_addr[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. ``https://127.0.0.1:9100/``."""
        scheme = "https" if self._server.ssl_adapter is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}/"

    def start(self) -> None:
        """Bind and serve in a background thread; return once listening."""
        with self._lock:
            if self._thread is not None:
                return
            self._server.prepare()
            self._thread = threading.Thread(
                target=self._server.serve, name="webserver", daemon=True
            )
            self._thread.start()
        _log.info("listening on %s", self.url)

    def serve_forever(self) -> None:
        """Start if needed and block until ``stop`` (e.g. from a SIGTERM handler)."""
        self.start()
        # Python runs signal handlers in the main thread only, between bytecodes; a SIGTERM
        # the kernel hands to another thread would wait for an untimed wait to end for ever.
        while not self._stopped.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop listening and close connections; safe to call more than once."""
        with self._lock:
            if self._thread is not None and not self._stopped.is_set():
                self._server.stop()
                self._thread.join()
            self._stopped.set()


def _wrap(app: WSGIApplication, web_config: WebConfig | None, max_requests: int) -> WSGIApplication:
    auth = web_config.basic_auth() if web_config is not None else None
    if auth is not None:
        app = _require_basic_auth(app, auth)
    if max_requests:
        app = _limit_in_flight(app, max_requests)
    if web_config is not None and web_config.headers:
        app = _add_headers(app, web_config.headers)
    return app
