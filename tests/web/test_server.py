"""WebServer against real clients on loopback: HTTP, HTTPS, stalls, slowloris, limits, auth."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

import bcrypt
import pytest
import requests
import trustme
from conftest import started

from exporter.web.server import WebServer
from exporter.web.web_config import WebConfig, load_web_config

PASSWORD_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def hello_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = f"hello {environ['wsgi.url_scheme']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class BlockingApp:
    """Holds each /block request until released; counts how many are inside."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = threading.Semaphore(0)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/block":
            self.inside.release()
            self.release.wait(30)
        return hello_app(environ, start_response)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client.example")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "client")}
    ca.cert_pem.write_to_path(paths["ca"])
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    client_cert.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    return paths


def web_config(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return load_web_config(path)


def tls_config(tmp_path: Path, extra: str = "") -> WebConfig:
    return web_config(
        tmp_path, f"tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n{extra}"
    )


def test_plain_http_serves_the_app(serve: list[WebServer]) -> None:
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0))
    assert server.url == f"http://127.0.0.1:{server.port}/"
    response = requests.get(server.url, timeout=5)
    assert response.status_code == 200
    assert response.text == "hello http\n"


def test_https_with_a_trusted_ca(
    serve: list[WebServer], pki: dict[str, Path], tmp_path: Path
) -> None:
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, web_config=tls_config(tmp_path)))
    assert server.url.startswith("https://")
    response = requests.get(server.url, verify=str(pki["ca"]), timeout=5)
    assert response.text == "hello https\n"


def test_silent_tls_client_does_not_block_other_scrapes(
    serve: list[WebServer], pki: dict[str, Path], tmp_path: Path
) -> None:
    server = started(
        serve,
        WebServer(hello_app, "127.0.0.1", 0, web_config=tls_config(tmp_path), header_timeout=20),
    )
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        time.sleep(0.2)  # let the server accept it first
        begin = time.monotonic()
        for _ in range(5):
            response = requests.get(server.url, verify=str(pki["ca"]), timeout=10)
            assert response.status_code == 200
        # Far below header_timeout (20 s): the silent client blocked nothing.
        assert time.monotonic() - begin < 10
        silent.settimeout(0.1)
        with pytest.raises(TimeoutError):
            silent.recv(1)  # and it is still connected: we did not simply drop it


@pytest.mark.e2e  # seconds on loopback by design
def test_slowloris_is_cut_off_while_others_are_served(serve: list[WebServer]) -> None:
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, header_timeout=2))
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    cut_off = threading.Event()

    def drip() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            try:
                for byte in head:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.5)
            except OSError:
                pass  # reset or broken pipe: the server hung up
            cut_off.set()

    dripper = threading.Thread(target=drip, daemon=True)
    begin = time.monotonic()
    dripper.start()
    for _ in range(3):
        assert requests.get(server.url, timeout=5).status_code == 200
    assert cut_off.wait(15), "slowloris client was never disconnected"
    # Sending the whole head would take 60 s; header_timeout is 2 s.
    assert time.monotonic() - begin < 15


def test_in_flight_limit_answers_503(serve: list[WebServer]) -> None:
    app = BlockingApp()
    server = started(serve, WebServer(app, "127.0.0.1", 0, max_requests=2))
    with ThreadPoolExecutor(2) as pool:
        blocked = [pool.submit(requests.get, server.url + "block", timeout=30) for _ in range(2)]
        for _ in range(2):
            assert app.inside.acquire(timeout=10)
        refused = requests.get(server.url, timeout=5)
        assert refused.status_code == 503
        # Health checks need no slot: a full house must not fail a liveness probe.
        for path in ("-/healthy", "-/ready"):
            assert requests.get(server.url + path, timeout=5).status_code == 200
        app.release.set()
        assert [future.result().status_code for future in blocked] == [200, 200]
    assert requests.get(server.url, timeout=5).status_code == 200


def test_basic_auth(serve: list[WebServer], tmp_path: Path) -> None:
    config = web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n")
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, web_config=config))
    ok = requests.get(server.url + "metrics", auth=("prometheus", "s3cret"), timeout=5)
    wrong = requests.get(server.url + "metrics", auth=("prometheus", "nope"), timeout=5)
    missing = requests.get(server.url + "anything", timeout=5)
    assert ok.status_code == 200
    for refused in (wrong, missing):
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="ucdn-prefetch-exporter"'


def test_configured_headers_are_added(serve: list[WebServer], tmp_path: Path) -> None:
    config = web_config(tmp_path, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, web_config=config))
    assert requests.get(server.url, timeout=5).headers["X-Frame-Options"] == "deny"


def test_required_client_certificate(
    serve: list[WebServer], pki: dict[str, Path], tmp_path: Path
) -> None:
    config = tls_config(
        tmp_path, "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    )
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, web_config=config))
    with_cert = requests.get(server.url, verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5)
    assert with_cert.status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, verify=str(pki["ca"]), timeout=5)


@pytest.mark.parametrize("allowed", ["client.example", "someone-else.example"])
def test_client_allowed_sans(
    serve: list[WebServer], pki: dict[str, Path], tmp_path: Path, allowed: str
) -> None:
    config = tls_config(
        tmp_path,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
        f"  client_allowed_sans: [{allowed}]\n",
    )
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, web_config=config))
    # The client's certificate, signed by the trusted CA, carries client.example alone.
    if allowed == "client.example":
        response = requests.get(
            server.url, verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5
        )
        assert response.status_code == 200
        return
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5)


def test_plain_http_on_the_tls_port_gets_400_and_the_server_lives(
    serve: list[WebServer], pki: dict[str, Path], tmp_path: Path
) -> None:
    server = started(serve, WebServer(hello_app, "127.0.0.1", 0, web_config=tls_config(tmp_path)))
    plain = requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert plain.status_code == 400
    assert "HTTPS only" in plain.text
    assert requests.get(server.url, verify=str(pki["ca"]), timeout=5).status_code == 200


def test_tls_versions_below_the_minimum_are_refused(
    serve: list[WebServer], pki: dict[str, Path], tmp_path: Path
) -> None:
    server = started(
        serve,
        WebServer(
            hello_app, "127.0.0.1", 0, web_config=tls_config(tmp_path, "  min_version: TLS13\n")
        ),
    )
    client = ssl.create_default_context(cafile=str(pki["ca"]))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        pytest.raises(ssl.SSLError),
    ):
        client.wrap_socket(sock, server_hostname="127.0.0.1")


def test_stop_is_prompt_and_idempotent(serve: list[WebServer]) -> None:
    server = WebServer(hello_app, "127.0.0.1", 0)
    server.start()
    with socket.create_connection(("127.0.0.1", server.port)):  # an idle client
        assert requests.get(server.url, timeout=5).status_code == 200
        begin = time.monotonic()
        server.stop()
        assert time.monotonic() - begin < 8
    server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, timeout=2)


def test_serve_forever_returns_after_stop() -> None:
    server = WebServer(hello_app, "127.0.0.1", 0)
    runner = threading.Thread(target=server.serve_forever, daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    served = False
    while not served and time.monotonic() < deadline:
        try:
            served = requests.get(server.url, timeout=2).status_code == 200
        except requests.exceptions.ConnectionError:
            time.sleep(0.05)
    assert served, "serve_forever never served"
    server.stop()
    runner.join(10)
    assert not runner.is_alive()
