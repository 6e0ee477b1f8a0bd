"""Proxies from the environment: the gateway's calls go through a real forward proxy.

Debian's tinyproxy runs on loopback in the foreground, its configuration and log in a
temporary folder; its log shows every request it was asked to forward. HTTPS goes
through its ``CONNECT`` tunnel with TLS end to end (``CA_BUNDLE`` still decides whom the
client trusts), HTTP as an absolute-form request line, ``NO_PROXY`` bypasses it, and a
host name is handed to the proxy rather than resolved by the client. The variables are
read in either case, by the client in this process and by the exporter as a process.
"""

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import free_port, installed, start_gateway, stop_process
from faultkit import Exporter, exporter_args
from hostile import Behaviour, HostileGateway, drip_headers, valid_answer
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import StaticDataset

pytestmark = pytest.mark.system  # needs Debian's tinyproxy

VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
MARGIN = 1.5  # a shared, noisy machine


class Tinyproxy:
    """tinyproxy on 127.0.0.1, allowing ``CONNECT`` to ``connect_ports`` only."""

    def __init__(self, folder: Path, connect_ports: tuple[int, ...]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = folder / "tinyproxy.log"
        config = folder / "tinyproxy.conf"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 30",
            "MaxClients 20",
            "LogLevel Connect",  # one line per request it is asked to forward
            f'LogFile "{self._log}"',
            f'PidFile "{folder / "tinyproxy.pid"}"',
            *(f"ConnectPort {port}" for port in connect_ports),
        ]
        config.write_text("\n".join(lines) + "\n")
        self._process = subprocess.Popen(
            [installed("tinyproxy", "tinyproxy"), "-d", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        give_up = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > give_up:
                    self.stop()
                    raise AssertionError(f"tinyproxy did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self._log.read_text() if self._log.exists() else ""

    def requests(self) -> list[str]:
        """The request lines it was asked to forward, in order, without the HTTP version."""
        return [
            line.split("): ", 1)[1].rsplit(" ", 1)[0]
            for line in self.log().splitlines()
            if "Request (file descriptor" in line
        ]

    def stop(self) -> None:
        stop_process(self._process)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Callable[..., Tinyproxy]]:
    started: list[Tinyproxy] = []

    def start(*connect_ports: int) -> Tinyproxy:
        folder = tmp_path / f"tinyproxy-{len(started)}"
        folder.mkdir()
        started.append(Tinyproxy(folder, connect_ports))
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The test's own proxy variables, in either case, removed: each test sets its own."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def _tls_gateway(
    gateways: list[HostileGateway], ca: trustme.CA, behaviour: Behaviour | None = None
) -> HostileGateway:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return start_gateway(gateways, behaviour or valid_answer(), context)


def _bundle(ca: trustme.CA, folder: Path) -> Path:
    path = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _client(url: str, **options: Any) -> ApiClient:
    return ApiClient(
        url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions(**options)
    )


def _fetch(client: ApiClient) -> int:
    try:
        window = client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=Deadline.after(10))
    finally:
        client.close()
    return window.task_count


def _failure(client: ApiClient) -> ApiError:
    with pytest.raises(ApiError) as raised:
        _fetch(client)
    return raised.value


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy"])
def test_https_goes_through_the_proxys_connect_tunnel(
    gateways: list[HostileGateway],
    proxy: Callable[..., Tinyproxy],
    environment: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
) -> None:
    ca = trustme.CA()
    gateway = _tls_gateway(gateways, ca)
    forward = proxy(_port(gateway.url))
    environment.setenv(name, forward.url)
    client = _client(gateway.url, ca_bundle=_bundle(ca, tmp_path))
    assert _fetch(client) == 0
    assert forward.requests() == [f"CONNECT 127.0.0.1:{_port(gateway.url)}"]
    assert gateway.connections[0].form["Action"] == PREFETCH_ACTION
    assert client.stats.snapshot()[PREFETCH_ACTION, "ok"] == 1


def test_the_deadline_ends_an_exchange_held_through_the_tunnel(
    gateways: list[HostileGateway],
    proxy: Callable[..., Tinyproxy],
    environment: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The watchdog guards the connections to a proxy as it does direct ones.
    ca = trustme.CA()
    gateway = _tls_gateway(gateways, ca, drip_headers())
    forward = proxy(_port(gateway.url))
    environment.setenv("HTTPS_PROXY", forward.url)
    client = _client(gateway.url, ca_bundle=_bundle(ca, tmp_path))
    deadline = Deadline.after(1.5)
    errors: list[ApiError] = []

    def fetch() -> None:
        try:
            client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=deadline)
        except ApiError as error:
            errors.append(error)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(deadline.remaining() + MARGIN)
    client.close()
    assert not worker.is_alive(), "the deadline did not end the exchange"
    assert [error.reason for error in errors] == ["timeout"]
    assert forward.requests() == [f"CONNECT 127.0.0.1:{_port(gateway.url)}"]
    # The proxy passed the close on: the gateway saw its end of the tunnel closed.
    assert gateway.connections[0].wait_closed(MARGIN) is not None


def test_tls_through_the_tunnel_is_end_to_end_and_checked_against_the_bundle(
    gateways: list[HostileGateway], proxy: Callable[..., Tinyproxy], environment: pytest.MonkeyPatch
) -> None:
    # The proxy forwards bytes; the certificate the client checks is the gateway's own, and
    # without CA_BUNDLE naming its CA (certifi's bundle does not know it) it is refused.
    gateway = _tls_gateway(gateways, trustme.CA())
    forward = proxy(_port(gateway.url))
    environment.setenv("HTTPS_PROXY", forward.url)
    error = _failure(_client(gateway.url, max_retries=0))
    assert error.reason == "connection_error"
    assert "SSL" in error.detail or "CERTIFICATE_VERIFY_FAILED" in error.detail
    assert forward.requests() == [f"CONNECT 127.0.0.1:{_port(gateway.url)}"]
    assert not any(connection.form for connection in gateway.connections), "nothing was sent"


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy"])
def test_http_goes_to_the_proxy_as_an_absolute_url(
    simulator: Callable[..., SimulatedApi],
    proxy: Callable[..., Tinyproxy],
    environment: pytest.MonkeyPatch,
    name: str,
) -> None:
    api = simulator(StaticDataset({}))
    forward = proxy()
    environment.setenv(name, forward.url)
    assert _fetch(_client(api.url)) == 0
    assert forward.requests() == [f"POST {api.url}"]
    assert api.request_count() == 1


@pytest.mark.parametrize("name", ["NO_PROXY", "no_proxy"])
def test_no_proxy_bypasses_the_proxy(
    simulator: Callable[..., SimulatedApi],
    proxy: Callable[..., Tinyproxy],
    environment: pytest.MonkeyPatch,
    name: str,
) -> None:
    api = simulator(StaticDataset({}))
    forward = proxy()
    for variable in ("HTTP_PROXY", "HTTPS_PROXY"):
        environment.setenv(variable, forward.url)
    environment.setenv(name, "127.0.0.1")
    assert _fetch(_client(api.url)) == 0
    assert api.request_count() == 1
    assert forward.requests() == []


def test_the_gateways_name_is_resolved_by_the_proxy_not_the_client(
    proxy: Callable[..., Tinyproxy], environment: pytest.MonkeyPatch
) -> None:
    # A name nobody resolves (RFC 2606): without a proxy the client fails on it itself;
    # through one, the client asks the proxy for it, and the proxy's failure is what it sees.
    url = "https://gateway.invalid/"
    alone = _failure(_client(url, max_retries=0))
    assert alone.reason == "connection_error"
    assert not alone.detail.startswith("ProxyError"), alone.detail
    forward = proxy(443)
    environment.setenv("HTTPS_PROXY", forward.url)
    through = _failure(_client(url, max_retries=0))
    assert forward.requests() == ["CONNECT gateway.invalid:443"]
    assert through.reason == "connection_error"
    assert through.detail.startswith("ProxyError"), through.detail
    assert "500" in through.detail, through.detail  # tinyproxy's "500 Unable to connect"


def test_a_proxy_that_refuses_the_tunnel_is_a_connection_error_naming_its_answer(
    gateways: list[HostileGateway],
    proxy: Callable[..., Tinyproxy],
    environment: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    gateway = _tls_gateway(gateways, ca)
    forward = proxy(443)  # not the gateway's port: CONNECT is refused with 403
    environment.setenv("HTTPS_PROXY", forward.url)
    client = _client(gateway.url, ca_bundle=_bundle(ca, tmp_path), max_retries=1)
    error = _failure(client)
    assert error.reason == "connection_error"
    assert error.detail.startswith("ProxyError"), error.detail
    assert "403" in error.detail, error.detail
    # Counted and retried as any connection error; the gateway never heard of it.
    assert client.stats.snapshot()[PREFETCH_ACTION, "connection_error"] == 2
    assert gateway.connections == []


@pytest.mark.e2e
def test_the_exporter_process_takes_the_proxy_from_its_environment(
    gateways: list[HostileGateway],
    proxy: Callable[..., Tinyproxy],
    environment: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    gateway = _tls_gateway(gateways, ca)
    forward = proxy(_port(gateway.url))
    args = [*exporter_args(gateway.url), "--once", "--ca-bundle", str(_bundle(ca, tmp_path))]
    exporter = Exporter(args, env={"HTTPS_PROXY": forward.url})
    assert exporter.wait_exit(timeout=20) == 0, exporter.log()
    assert 'ucdn_prefetch_up{platform="cdn",project_id="default"} 1.0' in exporter.stdout
    assert forward.requests() == [f"CONNECT 127.0.0.1:{_port(gateway.url)}"]
