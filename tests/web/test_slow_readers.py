"""WebServer against clients that pipeline requests and take their answers slowly.

A response being written to such a client holds no in-flight slot, and the write of one
answer is cut (the connection closed) once it has taken ``write_timeout``: asserted as the
scraper sees it (status and wall time) and as the slow reader sees it (its connection
closed, and when).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
import requests
import trustme
from conftest import started

from exporter.web.server import WebServer
from exporter.web.web_config import WebConfig, load_web_config

pytestmark = pytest.mark.e2e

# A large /metrics: at 16 KiB every 2 s, one answer takes 32 s to read.
BODY = b"x" * (256 * 1024)
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
READ_BYTES = 16 * 1024
READ_EVERY = 2.0
# More answers than the kernel buffers hold (about 4 MiB): the writes block.
PIPELINED = 100
# Generous for a shared, noisy machine.
NORMAL_LATENCY_BOUND = 2.0


def large_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = b"OK\n" if environ["PATH_INFO"] == "/ok" else BODY
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class SlowReaders:
    """Connections that pipeline requests and read 16 KiB every 2 s, sending one more
    request at each read; each records when the server closed it (EOF or reset)."""

    def __init__(self, port: int, count: int, tls: ssl.SSLContext | None = None) -> None:
        self.opened = time.monotonic()
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket()
            # A small window, so that the server's writes block after a few answers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BYTES)
            sock.connect(("127.0.0.1", port))
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
            sock.sendall(REQUEST * PIPELINED)
            sock.setblocking(False)
            self.sockets.append(sock)
        self.closed_at: dict[int, float] = {}
        self.received = Counter[int]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_slowly, daemon=True)
        self._thread.start()

    def _read_slowly(self) -> None:
        while not self._stop.wait(READ_EVERY):
            for index, sock in enumerate(self.sockets):
                if index not in self.closed_at:
                    self._read_once(index, sock)

    def _read_once(self, index: int, sock: socket.socket) -> None:
        try:
            chunk = sock.recv(READ_BYTES)
            sock.send(REQUEST)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:  # reset: closed by the server with requests still unread
            chunk = b""
        if chunk:
            self.received[index] += len(chunk)
        else:
            self.closed_at[index] = time.monotonic() - self.opened

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def test_45_slow_pipelining_readers_take_no_slot_from_a_scrape(serve: list[WebServer]) -> None:
    write_timeout = 8.0
    server = started(
        serve, WebServer(large_app, "127.0.0.1", 0, max_requests=40, write_timeout=write_timeout)
    )
    readers = SlowReaders(server.port, 45)
    try:
        time.sleep(READ_EVERY + 0.5)  # every reader has been answered and reads slowly
        statuses: Counter[int] = Counter()
        worst = 0.0
        for _ in range(20):
            begin = time.monotonic()
            statuses[requests.get(server.url + "ok", timeout=30).status_code] += 1
            worst = max(worst, time.monotonic() - begin)
            time.sleep(0.1)
        assert time.monotonic() - readers.opened < write_timeout, "test too slow to judge"
        # The readers really were reading (and holding writers) all along.
        assert readers.closed_at == {}
        assert len(readers.received) == 45
        assert statuses == {200: 20}
        assert worst < NORMAL_LATENCY_BOUND
        # No reader can take an answer of 256 KiB within the write timeout: each is cut.
        deadline = time.monotonic() + write_timeout + 3 * READ_EVERY
        while len(readers.closed_at) < 45 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(readers.closed_at) == 45
        assert max(readers.closed_at.values()) < write_timeout + 2 * READ_EVERY + 1.0
    finally:
        readers.close()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_an_answer_not_taken_in_time_closes_its_connection_and_frees_its_worker(
    serve: list[WebServer], tmp_path: Path, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    config, client = tls_pair(tmp_path) if tls else (None, None)
    write_timeout = 2.0
    server = started(
        serve,
        WebServer(
            large_app,
            "127.0.0.1",
            0,
            web_config=config,
            threads=1,
            write_timeout=write_timeout,
        ),
    )
    readers = SlowReaders(server.port, 1, client)
    try:
        deadline = time.monotonic() + 30
        while not readers.closed_at and time.monotonic() < deadline:
            time.sleep(0.1)
        assert readers.closed_at, "the slow reader was never cut"
        assert readers.closed_at[0] < write_timeout + 2 * READ_EVERY + 1.0
        # The only worker writes to others again.
        verify = str(tmp_path / "ca.pem") if tls else True
        assert requests.get(server.url + "ok", timeout=5, verify=verify).status_code == 200
    finally:
        readers.close()
    # A slow client's doing, not the server's fault: nothing to warn an operator about.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def tls_pair(tmp_path: Path) -> tuple[WebConfig, ssl.SSLContext]:
    """A web config serving HTTPS, and a client context that trusts it."""
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
    )
    return load_web_config(tmp_path / "web.yml"), ssl.create_default_context(
        cafile=str(tmp_path / "ca.pem")
    )
