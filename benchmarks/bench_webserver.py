"""Measure how hostile clients delay a normal scrape of the hardened web server.

Scenarios, each against a fresh in-process ``WebServer`` (defaults: max_requests 40,
header_timeout 10 s) serving a tiny app, so that only the server's own cost is measured:

* ``slow-plain``: N clients (default 200) send a request head one byte a second.
* ``slow-tls``: N clients (default 100) send one byte of a ClientHello and then nothing.
* ``bad-passwords``: N clients (default 60) loop on requests with random wrong passwords
  against a cost-10 bcrypt hash; the real scraper's password was accepted once before.

For each, a normal client makes 20 sequential requests (a new connection each) once the
hostile clients are connected; p50, max and the status codes are printed. For the slow
scenarios the time until each slow client sees its connection closed is printed too.
Run against another copy of the code with ``PYTHONPATH=/that/copy``.

    python benchmarks/bench_webserver.py [slow-plain|slow-tls|bad-passwords ...]
"""

import argparse
import base64
import contextlib
import multiprocessing
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

import bcrypt
import requests
import trustme

from exporter.web.server import WebServer
from exporter.web.web_config import WebConfig, load_web_config

REQUESTS = 20
PASSWORD = "the-real-scraper"


def hello_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [body]


def config(directory: Path, text: str) -> WebConfig:
    (directory / "web.yml").write_text(text)
    return load_web_config(directory / "web.yml")


class Dripper:
    """Holds slow connections open, sending one byte a second; notes when each is closed."""

    def __init__(self, port: int, count: int, payload: bytes, drip: bool) -> None:
        self._payload = payload
        self._drip = drip
        self.started = time.monotonic()
        self.sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.closed_after: list[float] = []
        for sock in self.sockets:
            sock.setblocking(False)
            sock.send(payload[:1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sent = 1
        while not self._stop.wait(1.0) and self.sockets:
            for sock in list(self.sockets):
                if self._gone(sock):
                    self.sockets.remove(sock)
                    self.closed_after.append(time.monotonic() - self.started)
                    sock.close()
                elif self._drip and sent < len(self._payload):
                    with contextlib.suppress(OSError):  # the server hung up: noted next round
                        sock.send(self._payload[sent : sent + 1])
            sent += 1

    @staticmethod
    def _gone(sock: socket.socket) -> bool:
        try:
            return sock.recv(4096) == b""  # a 408 or 400 answer, then EOF
        except BlockingIOError:
            return False
        except OSError:
            return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def timed_requests(call: Callable[[], int]) -> tuple[list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    for _ in range(REQUESTS):
        begin = time.monotonic()
        try:
            statuses[call()] += 1
        except requests.RequestException as err:
            statuses[-1] += 1
            print("  request failed:", type(err).__name__)
        latencies.append(time.monotonic() - begin)
        time.sleep(0.1)
    return latencies, statuses


def report(name: str, latencies: list[float], statuses: Counter[int]) -> None:
    print(
        f"{name}: p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms, statuses {dict(statuses)}"
    )


def slow(count: int, tls: bool, directory: Path) -> None:
    ca = trustme.CA()
    web_config = None
    verify: str | bool = True
    payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    if tls:
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        web_config = config(
            directory, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
        )
        verify = str(directory / "ca.pem")
        payload = b"\x16"  # the first byte of a TLS record carrying a ClientHello
    server = WebServer(hello_app, "127.0.0.1", 0, web_config=web_config)
    server.start()
    try:
        dripper = Dripper(server.port, count, payload, drip=not tls)
        time.sleep(1.0)
        latencies, statuses = timed_requests(
            lambda: requests.get(server.url, verify=verify, timeout=60).status_code
        )
        report(f"{count} slow {'TLS' if tls else 'plain'} clients", latencies, statuses)
        wait_until = time.monotonic() + 40
        while dripper.sockets and time.monotonic() < wait_until:
            time.sleep(0.5)
        closed = sorted(dripper.closed_after)
        if closed:
            print(
                f"  slow clients closed: {len(closed)}/{count}, first after {closed[0]:.1f} s, "
                f"last after {closed[-1]:.1f} s (checked once a second)"
            )
        else:
            print(f"  slow clients closed: 0/{count} within 40 s")
        dripper.stop()
    finally:
        server.stop()


def flood(
    url: str, count: int, seconds: float, answers: "multiprocessing.Queue[dict[int, int]]"
) -> None:
    """In a child process, so the flood's threads do not share the server's interpreter lock."""
    statuses: Counter[int] = Counter()
    stop_at = time.monotonic() + seconds

    def one_client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                auth = ("prometheus", secrets.token_hex(8))
                try:
                    statuses[session.get(url, auth=auth, timeout=60).status_code] += 1
                except requests.RequestException:
                    statuses[-1] += 1

    clients = [threading.Thread(target=one_client) for _ in range(count)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    answers.put(dict(statuses))


def bad_passwords(count: int, directory: Path) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    web_config = config(directory, f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    server = WebServer(hello_app, "127.0.0.1", 0, web_config=web_config)
    server.start()
    try:
        assert requests.get(server.url, auth=("prometheus", PASSWORD), timeout=30).ok
        answers: multiprocessing.Queue[dict[int, int]] = multiprocessing.Queue()
        flooder = multiprocessing.Process(target=flood, args=(server.url, count, 12.0, answers))
        flooder.start()
        time.sleep(3.0)
        header = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
        latencies, statuses = timed_requests(
            lambda: (
                requests.get(server.url, headers={"Authorization": header}, timeout=60).status_code
            )
        )
        report(f"{count} wrong-password clients", latencies, statuses)
        print(f"  flood answers: {answers.get(timeout=120)}")
        flooder.join(60)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["slow-plain", "slow-tls", "bad-passwords"])
    parser.add_argument("--clients", type=int, help="hostile clients (default per scenario)")
    options = parser.parse_args()
    for scenario in options.scenarios:
        with tempfile.TemporaryDirectory() as temporary:
            directory = Path(temporary)
            if scenario == "slow-plain":
                slow(options.clients or 200, tls=False, directory=directory)
            elif scenario == "slow-tls":
                slow(options.clients or 100, tls=True, directory=directory)
            elif scenario == "bad-passwords":
                bad_passwords(options.clients or 60, directory)
            else:
                parser.error(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
