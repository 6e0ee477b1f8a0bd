"""A hostile API gateway on loopback: raw TCP, one scripted behaviour per connection.

Each connection gets its own thread, which reads the request's head and body and then
hands a :class:`Peer` to the gateway's behaviour: a function that writes whatever bytes
it likes (a status line dripped a byte at a time, a flood of ``100 Continue``, a reset
mid-body, a valid answer). The gateway records, for every connection, the request's
form, the bytes of its answer the client's end accepted, and the moment it saw the client
close the connection (``recv`` returning ``b""`` or an error), so a test can assert that
the client really let go, and when::

    with HostileGateway(drip_status_line()) as gateway:
        ...  # point an ApiClient at gateway.url
        assert gateway.connections[0].wait_closed(5.0) is not None

Behaviours: :func:`drip_status_line`, :func:`drip_headers`, :func:`drip_chunk_size`,
:func:`flood_chunk_size`, :func:`drip_trailers`, :func:`flood_continue`,
:func:`flood_trailers`, :func:`cut_mid_body`, :func:`http_error`, :func:`gzip_bomb`,
:func:`nested_json`, :func:`valid_answer`, :func:`full_pages`, :func:`padded_lookups`,
:func:`keep_alive_answers`; :func:`in_turn` gives successive connections successive
behaviours (``in_turn(drip_headers(), valid_answer())`` holds the first connection only).
Given a server-side ``tls`` context, the gateway speaks HTTPS.
"""

from __future__ import annotations

import gzip
import itertools
import json
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

_HEAD_LIMIT = 65536
_POLL_SECONDS = 0.05


class PeerClosed(Exception):
    """The client closed the connection (or the gateway is stopping); the behaviour ends."""


@dataclass
class Connection:
    """What the gateway saw of one connection."""

    opened_at: float
    form: dict[str, str] = field(default_factory=dict)
    sent: int = 0  # bytes of answers the client's end accepted
    closed_at: float | None = None  # monotonic time the client's close was seen
    _closed: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait_closed(self, timeout: float) -> float | None:
        """The moment the client's close was seen, waiting up to ``timeout`` s for it."""
        self._closed.wait(timeout)
        return self.closed_at

    def saw_close(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        self._closed.set()


class Peer:
    """The gateway's end of one connection, as a behaviour writes to it."""

    def __init__(self, sock: socket.socket, record: Connection, stopping: threading.Event):
        self.sock = sock
        self.record = record
        self._stopping = stopping

    @property
    def form(self) -> dict[str, str]:
        """The request's form fields."""
        return self.record.form

    def send(self, data: bytes) -> None:
        """Write ``data``; :class:`PeerClosed` if the client has gone."""
        self._check_closed(0)
        try:
            self.sock.sendall(data)
        except OSError:
            self.record.saw_close()
            raise PeerClosed from None
        self.record.sent += len(data)

    def drip(self, data: Iterator[int] | bytes, interval: float) -> None:
        """Write ``data`` one byte every ``interval`` s, watching for the client's close."""
        for byte in data:
            self.send(bytes([byte]))
            self._check_closed(interval)

    def flood(self, unit: bytes) -> None:
        """Write ``unit`` again and again, as fast as the client reads, until it closes."""
        batch = unit * max(1, 16384 // len(unit))
        while True:
            self.send(batch)

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0) rather than a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def _check_closed(self, wait: float) -> None:
        """Wait up to ``wait`` s; raise :class:`PeerClosed` if the client closed meanwhile."""
        give_up = time.monotonic() + wait
        while True:
            if self._stopping.is_set():
                raise PeerClosed
            left = give_up - time.monotonic()
            readable, _, _ = select.select([self.sock], [], [], max(0.0, min(left, _POLL_SECONDS)))
            if readable:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.record.saw_close()
                    raise PeerClosed
            if left <= 0:
                return


Behaviour = Callable[[Peer], None]


class HostileGateway:
    """A raw TCP server on 127.0.0.1 (port 0) running ``behaviour`` on every connection."""

    def __init__(self, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> None:
        self._behaviour = behaviour
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[Connection] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        port = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"

    @property
    def connections(self) -> list[Connection]:
        """Every connection accepted so far, in order."""
        with self._lock:
            return list(self._connections)

    def start(self) -> HostileGateway:
        """Accept connections in the background."""
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end every behaviour, close every connection."""
        self._stopping.set()
        # Shutting the listener down wakes the blocked accept(); closing it alone would not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> HostileGateway:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            record = Connection(time.monotonic())
            thread = threading.Thread(target=self._serve, args=(sock, record), daemon=True)
            with self._lock:
                self._connections.append(record)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, record: Connection) -> None:
        try:
            if self._tls is not None:
                sock.settimeout(5.0)
                sock = self._tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
        except OSError:  # the client refused the certificate, or hung up
            record.saw_close()
            sock.close()
            return
        peer = Peer(sock, record, self._stopping)
        try:
            record.form = _read_request(sock)
            self._behaviour(peer)
            peer._check_closed(10.0)  # a finished answer: wait (bounded) for the client's close
        except PeerClosed:
            pass
        except OSError:
            record.saw_close()
        finally:
            sock.close()


def _read_request(sock: socket.socket) -> dict[str, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > _HEAD_LIMIT:
            raise OSError("no complete request head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("request body cut short")
        body += chunk
    return dict(parse_qsl(body.decode()))


def _endless(byte: bytes) -> Iterator[int]:
    return itertools.repeat(byte[0])


def _head(*headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_body(tasks: list[dict[str, Any]], total_count: int | None = None) -> bytes:
    """A successful answer's JSON carrying ``tasks``."""
    answer: dict[str, Any] = {"RetCode": 0, "Action": "DescribeNewUcdnPrefetchCacheTaskResponse"}
    answer["TaskList"] = tasks
    answer["TotalCount"] = len(tasks) if total_count is None else total_count
    return json.dumps(answer).encode()


def drip_status_line(interval: float = 0.1) -> Behaviour:
    """A status line whose reason phrase never ends, one byte every ``interval`` s."""

    def behave(peer: Peer) -> None:
        peer.drip(b"HTTP/1.1 200 ", interval)
        peer.drip(_endless(b"K"), interval)

    return behave


def drip_headers(interval: float = 0.1) -> Behaviour:
    """A status line, then a header whose value never ends, dripped."""

    def behave(peer: Peer) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        peer.drip(_endless(b"a"), interval)

    return behave


def drip_chunk_size(interval: float = 0.1) -> Behaviour:
    """A chunked answer whose first chunk-size line (an extension) never ends, dripped."""

    def behave(peer: Peer) -> None:
        peer.send(_head("Transfer-Encoding: chunked") + b"10;ext=")
        peer.drip(_endless(b"x"), interval)

    return behave


def flood_chunk_size() -> Behaviour:
    """A chunked answer whose first chunk-size line (an extension) never ends, as fast as it
    is read."""

    def behave(peer: Peer) -> None:
        peer.send(_head("Transfer-Encoding: chunked") + b"10;ext=")
        peer.flood(b"x")

    return behave


def drip_trailers(interval: float = 0.1) -> Behaviour:
    """A whole chunked body, then a trailer line that never ends, dripped."""

    def behave(peer: Peer) -> None:
        body = answer_body([])
        chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\nX-Trailer: "
        peer.send(_head("Transfer-Encoding: chunked") + chunk)
        peer.drip(_endless(b"t"), interval)

    return behave


def flood_continue() -> Behaviour:
    """``HTTP/1.1 100 Continue`` interim answers, without end, as fast as they are read."""

    def behave(peer: Peer) -> None:
        peer.flood(b"HTTP/1.1 100 Continue\r\n\r\n")

    return behave


def flood_trailers() -> Behaviour:
    """A whole chunked body, then trailer lines without end, as fast as they are read."""

    def behave(peer: Peer) -> None:
        body = answer_body([])
        peer.send(_head("Transfer-Encoding: chunked") + f"{len(body):x}\r\n".encode() + body)
        peer.send(b"\r\n0\r\n")
        peer.flood(b"X-Trailer: flood\r\n")

    return behave


def cut_mid_body(*, reset: bool = True) -> Behaviour:
    """Half of a declared body, then a reset (or, ``reset=False``, a plain close)."""

    def behave(peer: Peer) -> None:
        body = answer_body([])
        peer.send(_head(f"Content-Length: {len(body)}") + body[: len(body) // 2])
        if reset:
            peer.reset()
        else:
            peer.sock.shutdown(socket.SHUT_RDWR)
        raise PeerClosed  # the gateway ended it; nothing is left to wait for

    return behave


def http_error(status: int) -> Behaviour:
    """An HTTP error with an empty body (a 503 is retried, as a gateway's overload)."""

    def behave(peer: Peer) -> None:
        peer.send(_head("Content-Length: 0").replace(b"200 OK", f"{status} Error".encode()))

    return behave


def gzip_bomb(size: int) -> Behaviour:
    """An answer sent gzipped though the client asked for identity: ``size`` spaces, a few
    hundred times smaller on the wire."""
    body = gzip.compress(b" " * size)

    def behave(peer: Peer) -> None:
        peer.send(_head(f"Content-Length: {len(body)}", "Content-Encoding: gzip") + body)

    return behave


def nested_json(depth: int = 5000) -> Behaviour:
    """A valid answer but for an ignored field nested ``depth`` levels deep."""

    def behave(peer: Peer) -> None:
        body = b'{"RetCode": 0, "Deep": ' + b"[" * depth + b"]" * depth + b', "TaskList": []}'
        peer.send(_head(f"Content-Length: {len(body)}") + body)

    return behave


def valid_answer(tasks: list[dict[str, Any]] | None = None) -> Behaviour:
    """A well-formed answer with ``tasks`` (none by default)."""
    body = answer_body(tasks or [])

    def behave(peer: Peer) -> None:
        peer.send(_head(f"Content-Length: {len(body)}") + body)

    return behave


def keep_alive_answers(count: int, *, then_close: bool = False) -> Behaviour:
    """``count`` well-formed answers (no task) on one kept-alive connection, a request each;
    with ``then_close``, the gateway closes the connection after the last, as an idle
    keep-alive connection is closed by a server's timeout."""
    body = answer_body([])
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"

    def behave(peer: Peer) -> None:
        for answered in range(count):
            if answered:
                peer.record.form = _read_request(peer.sock)
            peer.send(f"{head}\r\n\r\n".encode() + body)
        if then_close:
            peer.sock.shutdown(socket.SHUT_RDWR)

    return behave


def full_pages(
    urls_per_task: int = 20,
    url_length: int = 200,
    *,
    total: int | None = None,
    promised: int | None = None,
) -> Behaviour:
    """Every page full, whatever its Offset, with TotalCount always one page further on
    (or ``promised``, which sends the client a window's worth of pages at once).

    Each task carries ``urls_per_task`` URLs of ``url_length`` characters, so that a
    collection that believes the gateway reads without end. With ``total``, an honest
    window instead: ``total`` tasks, paged, and TotalCount says so.
    """

    def behave(peer: Peer) -> None:
        limit = int(peer.form.get("Limit", "100"))
        offset = int(peer.form.get("Offset", "0"))
        last = offset + limit if total is None else min(offset + limit, total)
        tasks = [_task(number, urls_per_task, url_length) for number in range(offset, last)]
        claim = total if total is not None else promised or offset + 2 * limit
        body = answer_body(tasks, total_count=claim)
        peer.send(_head(f"Content-Length: {len(body)}") + body)

    return behave


def padded_lookups(
    unfinished: int, padding: int, urls_per_task: int = 30, url_length: int = 2000
) -> Behaviour:
    """A window of ``unfinished`` tasks, all still running, created an hour ago; every
    answer to a ``TaskId.N`` lookup carries the tasks asked for and ``padding`` unasked
    ones of ``urls_per_task`` URLs of ``url_length`` characters each.

    A list request (no TaskId) gets the window's tasks created within its BeginTime and
    EndTime, paged by Limit and Offset, so that a collection between full syncs finds no
    new task and looks every unfinished one up.
    """
    created = int(time.time()) - 3600

    def behave(peer: Peer) -> None:
        form = peer.form
        asked = [value for name, value in form.items() if name.startswith("TaskId.")]
        if asked:
            tasks = [_task(int(task_id.split("-")[1]), 1, 60, created) for task_id in asked]
            extra = range(10**6, 10**6 + padding)
            tasks += [_task(number, urls_per_task, url_length, created) for number in extra]
            body = answer_body(tasks)
        else:
            listed = int(form["BeginTime"]) <= created <= int(form["EndTime"])
            window = [_task(n, 1, 60, created) for n in range(unfinished)] if listed else []
            offset, limit = int(form["Offset"]), int(form["Limit"])
            body = answer_body(window[offset : offset + limit], total_count=len(window))
        peer.send(_head(f"Content-Length: {len(body)}") + body)

    return behave


def _task(number: int, urls: int, url_length: int, created: int | None = None) -> dict[str, Any]:
    created = int(time.time()) - 60 if created is None else created
    pad = "x" * max(0, url_length - 40)
    return {
        "TaskId": f"task-{number}",
        "CreateTime": created,
        "Status": "process",
        "UrlLists": [
            {
                "Url": f"https://cdn.example/{number}/{index}/{pad}",
                "Status": "process",
                "CreateTime": created,
                "FinishTime": 0,
                "Progress": 50,
            }
            for index in range(urls)
        ],
    }


def in_turn(*behaviours: Behaviour) -> Behaviour:
    """The first connection gets the first behaviour, and so on; the last one repeats."""
    counter = itertools.count()
    lock = threading.Lock()

    def behave(peer: Peer) -> None:
        with lock:
            index = min(next(counter), len(behaviours) - 1)
        behaviours[index](peer)

    return behave
