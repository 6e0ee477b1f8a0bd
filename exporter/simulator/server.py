"""The HTTP server: it reads requests, records them, applies faults and answers them."""

import contextlib
import http.server
import json
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

from exporter.simulator.account import Account, Project
from exporter.simulator.api import answer, auth_problem
from exporter.simulator.hooks import Faults, FixedDelay
from exporter.simulator.protocol import (
    ACTION,
    MAX_REQUEST_BYTES,
    PROJECT_LIST_ACTION,
    REQUEST_ID_HEADER,
    RET_IAM_DENIED,
    RET_PARAMS_INVALID,
    RET_RATE_LIMITED,
    Dataset,
    Encoding,
    Target,
    error_payload,
    json_bytes,
)
from exporter.simulator.query import ParamError, form_params, json_params, offset_of, target_of


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    received: float  # time.monotonic() on arrival, before any delay
    method: str
    path: str  # the request target, query string included
    encoding: Encoding
    params: Mapping[str, str]  # as sent on the wire (JSON values through wire_value)
    target: Target | None  # None for GetProjectList, or when IsDcdn is not true/false

    @property
    def action(self) -> str | None:
        """The Action the request named, known or not; None when it named none."""
        return self.params.get("Action") or None


class _Server(http.server.ThreadingHTTPServer):
    """The HTTP server, knowing its :class:`SimulatedApi`."""

    daemon_threads = True
    # socketserver's backlog of 5 resets connections when a client opens dozens at once,
    # as an exporter collecting an account of many projects does.
    request_queue_size = 128
    api: "SimulatedApi"

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own host name: a DNS lookup we don't need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal here; anything else is a bug to show.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection: parses, records, applies faults, answers."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real gateway
    # The headers and the body go out in two writes: with Nagle's algorithm the body waits
    # for the client's delayed ACK of the headers, 40 ms on Linux loopback, every answer.
    disable_nagle_algorithm = True
    _params: dict[str, str]
    _problem: str | None  # why the parameters could not be read, if they could not
    _payload: dict[str, Any] | None  # the real answer, computed at most once per request
    _next_request_id: str | None = None  # a fault's request id for the next answer
    _headers_buffer: list[bytes]  # http.server's own, absent from its type stubs

    @property
    def _api(self) -> "SimulatedApi":
        return cast(_Server, self.server).api

    def setup(self) -> None:
        super().setup()
        self._api._track(self.connection, open_=True)

    def finish(self) -> None:
        self._api._track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read the request log instead."""

    def do_GET(self) -> None:
        """Parameters in the query string."""
        _, _, query = self.path.partition("?")
        self._serve("query", lambda: form_params(query.encode("utf-8")))

    def do_POST(self) -> None:
        """Parameters in a form or JSON body."""
        body = self._read_body()
        if body is None:
            return
        media = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media == "application/json":
            self._serve("json", lambda: json_params(body))
        else:
            self._serve("form", lambda: form_params(body))

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BYTES:
            self.send_error(413 if length > 0 else 400)
            return None
        return self.rfile.read(length)

    def _serve(self, encoding: Encoding, parse: Callable[[], dict[str, str]]) -> None:
        received = time.monotonic()
        self._params, self._problem, self._payload = {}, None, None
        try:
            self._params = parse()
        except ParamError as error:
            self._problem = str(error)
        target = target_of(self._params)
        self._api._record(
            RecordedRequest(received, self.command, self.path, encoding, self._params, target)
        )
        if not self._api._admit(received):
            action = self._params.get("Action") or ACTION
            # 153 is the README's "rate limited", answered at once, before any delay or fault.
            refusal = error_payload(RET_RATE_LIMITED, "Request rate limited", action)
            self.send(200, json_bytes(refusal), "application/json; charset=utf-8")
            return
        delay, fault = self._api.faults.take(target, offset_of(self._params))
        if delay and self.pause(delay):
            self.drop(reset=False)
            return
        if fault is not None:
            fault.answer(self)
        else:
            self.send(200, json_bytes(self._real_payload()), "application/json; charset=utf-8")

    def _real_payload(self) -> dict[str, Any]:
        if self._payload is None:
            self._payload = (
                self._api.answer(self._params)
                if self._problem is None
                else error_payload(RET_PARAMS_INVALID, self._problem)
            )
        return self._payload

    def send_response(self, code: int, message: str | None = None) -> None:
        """The status line, then the request id every answer of the gateway carries."""
        super().send_response(code, message)
        request_id, self._next_request_id = self._next_request_id, None
        self.send_header(REQUEST_ID_HEADER, request_id or str(uuid.uuid4()))

    # The Exchange protocol, for faults.

    def signatures(self) -> list[str]:
        """The signatures received so far, oldest first, this request's last (if it had one)."""
        return [
            request.params["Signature"]
            for request in self._api.requests
            if "Signature" in request.params
        ]

    def api_payload(self) -> dict[str, Any]:
        """The answer the server would give, as a private copy faults may change."""
        # A JSON round trip deep-copies, so no fault can touch the dataset's own tasks.
        return cast(dict[str, Any], json.loads(json_bytes(self._real_payload())))

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        raw_header_lines: Sequence[str] = (),
    ) -> None:
        """Send a complete response with a Content-Length."""
        self.send_head(status, content_type, len(body), headers, raw_header_lines)
        self.write(body)

    def send_head(
        self,
        status: int,
        content_type: str,
        content_length: int | None,
        headers: Mapping[str, str] | None = None,
        raw_header_lines: Sequence[str] = (),
    ) -> None:
        """Send status line and headers; without a length the body ends at connection close.

        A ``X-UCLOUD-REQUEST-UUID`` in ``headers`` replaces the random one; each of
        ``raw_header_lines`` is sent as it is, after the others.
        """
        extra = dict(headers or {})
        self._next_request_id = extra.pop(REQUEST_ID_HEADER, None)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if content_length is None:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(content_length))
        for name, value in extra.items():
            self.send_header(name, value)
        for line in raw_header_lines:
            self._headers_buffer.append(f"{line}\r\n".encode("latin-1", "strict"))
        self.end_headers()

    def write(self, data: bytes) -> bool:
        """Send part of the body; False (and no more keep-alive) once the client is gone."""
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True
            return False
        return True

    def drop(self, *, reset: bool) -> None:
        """Close the connection now; with ``reset`` the kernel sends RST instead of FIN."""
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The read file holds a reference to the socket: close it first or close() is a no-op.
        self.rfile.close()
        self.connection.close()

    def pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: forever) unless the server stops first; True if it did."""
        return self._api._stopping.wait(seconds)


class SimulatedApi:
    """A UCDN API gateway on loopback serving an account's dataset, with faults on demand.

    Use as a context manager, or :meth:`start` and :meth:`stop`. Requests are served in
    parallel, each in its own daemon thread, on any path. ``total_count_error`` is added
    to every TotalCount so tests can make it lie. ``refused_actions`` are the actions the
    key's sub-account may not call: a signed request of one is answered RetCode 299, as
    the gateway answers when IAM denies it (:attr:`refuse_project_list` is that switch for
    ``GetProjectList``). ``clock`` sets "now" for the default EndTime: give a
    :class:`LiveDataset` the same clock.

    ``projects`` declares the account's projects (see :mod:`~exporter.simulator.account`);
    without them the account is open: one default project listed, every project served.
    :meth:`add_project` and :meth:`remove_project` change the account while it runs.
    ``rate_limit`` answers at most that many requests in any one second and the rest
    RetCode 153 at once; :attr:`rate_limited` counts them.
    """

    def __init__(
        self,
        public_key: str,
        private_key: str,
        dataset: Dataset,
        *,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        projects: Iterable[Project] | None = None,
        rate_limit: int | None = None,
    ) -> None:
        if rate_limit is not None and rate_limit < 1:
            raise ValueError(f"rate_limit must be at least 1, not {rate_limit}")
        self.public_key = public_key
        self._private_key = private_key
        self.dataset = dataset
        self.account = Account(projects)
        self.rate_limit = rate_limit
        self._admitted: deque[float] = deque()  # arrival times of the last second's answers
        self._rate_limited = 0
        self.faults: Faults = faults if faults is not None else FixedDelay()
        self.total_count_error = 0
        self.refused_actions: set[str] = set()
        self._clock = clock
        self._address = (host, port)
        self._server: _Server | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        server = _Server(self._address, _Handler)
        server.api = self
        self._server = server
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._serving = threading.Thread(
            target=self._serve, args=(server, self._wake_reader), daemon=True
        )
        self._serving.start()
        return self

    @staticmethod
    def _serve(server: _Server, wake: socket.socket) -> None:
        # serve_forever polls for shutdown(); waiting on a wake-up socket beside the
        # listener instead lets stop() end the loop at once rather than a poll later.
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not any(key.fileobj is wake for key, _ in selector.select()):
                server.handle_request()

    @property
    def url(self) -> str:
        """The base URL to send requests to, e.g. ``http://127.0.0.1:PORT/``."""
        if self._server is None:
            raise RuntimeError("not started")
        return f"http://{self._server.server_name}:{self._server.server_port}/"

    def stop(self) -> None:
        """Stop serving and cut every open connection: delays, drips and hangs end at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._wake_writer.send(b"x")
        self._serving.join()
        self._wake_reader.close()
        self._wake_writer.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since start or :meth:`reset_log`, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def request_count(
        self,
        project_id: str | None = None,
        is_dcdn: bool | None = None,
        *,
        action: str | None = None,
    ) -> int:
        """How many requests were received, optionally only for a project, platform or action."""
        return sum(
            1
            for record in self.requests
            if (project_id is None or (record.target and record.target[0] == project_id))
            and (is_dcdn is None or (record.target and record.target[1] == is_dcdn))
            and (action is None or record.action == action)
        )

    def requests_by_action(self) -> Counter[str | None]:
        """How many requests named each Action (None: no Action), since start or reset_log."""
        return Counter(record.action for record in self.requests)

    def reset_log(self) -> None:
        """Forget the requests received so far, and how many of them were rate limited."""
        with self._lock:
            self._requests.clear()
            self._rate_limited = 0

    @property
    def rate_limited(self) -> int:
        """Requests the rate limit answered RetCode 153, since start or reset_log."""
        with self._lock:
            return self._rate_limited

    def add_project(self, project_id: str, name: str = "") -> None:
        """Give the account a project (no tasks or domains unless the dataset has some for it)."""
        self.account.add(project_id, name, create_time=int(self._clock()))

    def remove_project(self, project_id: str) -> None:
        """Take a project from the account: calls naming it are answered RetCode 292 from now on."""
        self.account.remove(project_id)

    @property
    def refuse_project_list(self) -> bool:
        """Whether ``GetProjectList`` is refused by IAM (RetCode 299), as for a sub-account."""
        return PROJECT_LIST_ACTION in self.refused_actions

    @refuse_project_list.setter
    def refuse_project_list(self, refused: bool) -> None:
        if refused:
            self.refused_actions.add(PROJECT_LIST_ACTION)
        else:
            self.refused_actions.discard(PROJECT_LIST_ACTION)

    def answer(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The API's answer to one request's parameters, as the gateway would give it."""
        problem = auth_problem(params, self.public_key, self._private_key)
        if problem is not None:
            return problem
        if params["Action"] in self.refused_actions:
            return error_payload(RET_IAM_DENIED, "Permission denied by IAM", params["Action"])
        return answer(
            params,
            self.dataset,
            self.account,
            now=int(self._clock()),
            total_count_error=self.total_count_error,
        )

    def _admit(self, received: float) -> bool:
        """Whether the rate limit lets a request received at ``received`` be answered."""
        if self.rate_limit is None:
            return True
        with self._lock:
            # A sliding window: the answers of the second before this arrival.
            while self._admitted and self._admitted[0] <= received - 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= self.rate_limit:
                self._rate_limited += 1
                return False
            self._admitted.append(received)
            return True

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
