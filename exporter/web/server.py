"""Production WSGI serving on cheroot, hardened where prometheus_client's server is weak.

* No worker thread waits for a client (:mod:`exporter.web.connections`): the TLS handshake
  and the request head are read in the selector loop without blocking, and a connection
  whose head has not arrived within ``header_timeout`` is closed.
* At most ``max_requests`` application calls run at once; past that the answer is an
  immediate ``503``, as node_exporter's ``--web.max-requests``. A slot bounds work, not
  readers: it is given back once the body is produced, before it is written, so that
  clients that take their answers slowly hold none.
* A client has ``header_timeout`` to send a request head and ``write_timeout`` to take
  each answer; past either its connection is closed, and its worker is free again.
* Request framing that proxies may read differently is refused with ``400``: a
  Content-Length that is not plain digits, differing repeated Content-Lengths,
  Content-Length with Transfer-Encoding, and whitespace before a header's colon
  (:mod:`exporter.web.framing`).
* Basic auth and extra response headers come from the web configuration file. The
  password is checked before an in-flight slot is taken, and ``/-/healthy`` and
  ``/-/ready`` (a fixed "OK") need none, for probes that cannot send one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from exporter.settings.config import Settings
from exporter.web.auth import AuthVerdict, BasicAuth
from exporter.web.connections import HardenedServer
from exporter.web.web_config import WebConfig

_log = logging.getLogger(__name__)

REALM = "ucdn-prefetch-exporter"
# Paths that answer a fixed "OK" and so need no password: probes cannot always send one.
UNAUTHENTICATED_PATHS = frozenset({"/-/healthy", "/-/ready"})
# The setting owns the default, so that a server built without settings cannot drift.
_DEFAULT_MAX_REQUESTS: int = Settings.model_fields["max_requests"].default
# Workers only ever run requests whose head is complete; the spares send the 503s.
_SPARE_THREADS = 16
_UNLIMITED_THREADS = 56


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
    # Retry-After: a check of a password not yet known is about one bcrypt away.
    busy = [("Retry-After", "1")]

    def authenticated(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in UNAUTHENTICATED_PATHS:
            return app(environ, start_response)
        verdict = auth.verify(environ.get("HTTP_AUTHORIZATION"))
        if verdict is AuthVerdict.ALLOWED:
            return app(environ, start_response)
        if verdict is AuthVerdict.BUSY:
            return _plain_response(
                start_response, "429 Too Many Requests", b"Too many password checks\n", busy
            )
        return _plain_response(start_response, "401 Unauthorized", b"Unauthorized\n", challenge)

    return authenticated


def _limit_in_flight(app: WSGIApplication, max_requests: int) -> WSGIApplication:
    slots = threading.BoundedSemaphore(max_requests)

    def limited(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # Health answers never call the API and take microseconds: a liveness probe must
        # not fail (and restart the pod) because scrapes fill every slot.
        if environ.get("PATH_INFO") in UNAUTHENTICATED_PATHS:
            return app(environ, start_response)
        if not slots.acquire(blocking=False):
            return _plain_response(
                start_response, "503 Service Unavailable", b"Too many requests in flight\n"
            )
        # The body is produced while the slot is held and written after: a client that
        # reads slowly must not hold the slot a scrape needs.
        try:
            body = app(environ, start_response)
            try:
                return list(body)
            finally:
                if hasattr(body, "close"):
                    body.close()
        finally:
            slots.release()

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
        max_requests: int = _DEFAULT_MAX_REQUESTS,
        header_timeout: float = 10.0,
        write_timeout: float = 10.0,
        threads: int | None = None,
    ) -> None:
        """Prepare the server; nothing listens until ``start`` or ``serve_forever``.

        ``max_requests`` 0 means no in-flight limit. ``threads`` defaults to
        ``max_requests`` plus spares, so that 503s can still be sent when the limit is hit.
        """
        if threads is None:
            threads = max_requests + _SPARE_THREADS if max_requests else _UNLIMITED_THREADS
        self._host = host
        self._server = HardenedServer(
            (host, port),
            _wrap(app, web_config, max_requests),
            threads=threads,
            server_name=REALM,
            header_timeout=header_timeout,
            write_timeout=write_timeout,
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
        scheme = "https" if self._server.tls_context is not None else "http"
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
    # The in-flight limit is inside authentication: clients without the password must not
    # take the slots that the real scraper needs.
    if max_requests:
        app = _limit_in_flight(app, max_requests)
    auth = web_config.basic_auth() if web_config is not None else None
    if auth is not None:
        app = _require_basic_auth(app, auth)
    if web_config is not None and web_config.headers:
        app = _add_headers(app, web_config.headers)
    return app
