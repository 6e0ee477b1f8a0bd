"""The gateway's connections: TLS trusts only what it should (``CA_BUNDLE``, else certifi's
bundle, whatever requests' own variables say), kept-alive connections are reused, and one
the gateway closed while idle costs a new connection, not a failure.

Against :mod:`hostile` gateways on loopback, HTTPS with throwaway certificates (trustme),
through an ``ApiClient`` in this process.
"""

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import start_gateway
from hostile import HostileGateway, keep_alive_answers, valid_answer
from pydantic import SecretStr
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions
from exporter.gateway.watchdog import GuardedAdapter


def _tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def _client(gateway: HostileGateway, **options: Any) -> ApiClient:
    return ApiClient(gateway.url, "public", SecretStr("private"), options=ClientOptions(**options))


def _fetch(client: ApiClient) -> int:
    window = client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=Deadline.after(10))
    return window.task_count


def _outcomes(client: ApiClient) -> dict[str, int]:
    counts = client.stats.snapshot()
    return {
        outcome: n for (action, outcome), n in counts.items() if action == PREFETCH_ACTION and n
    }


def _bundle(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def test_https_with_the_ca_bundle_is_trusted(
    gateways: list[HostileGateway], tmp_path: Path
) -> None:
    ca = trustme.CA()
    gateway = start_gateway(gateways, valid_answer(), _tls(ca, "127.0.0.1"))
    client = _client(gateway, ca_bundle=_bundle(ca, tmp_path))
    try:
        assert _fetch(client) == 0
    finally:
        client.close()
    assert _outcomes(client) == {"ok": 1}
    assert gateway.connections[0].form["Action"] == PREFETCH_ACTION


@pytest.mark.parametrize("known_ca", [False, True], ids=["unknown CA", "another host"])
def test_a_certificate_that_does_not_prove_the_gateway_is_refused(
    gateways: list[HostileGateway], tmp_path: Path, known_ca: bool
) -> None:
    ca = trustme.CA()
    # A CA certifi's bundle does not know; or the bundle's CA, for another host name.
    names = ["gateway.example"] if known_ca else ["127.0.0.1"]
    gateway = start_gateway(gateways, valid_answer(), _tls(ca, *names))
    bundle = _bundle(ca, tmp_path) if known_ca else None
    client = _client(gateway, ca_bundle=bundle, max_retries=0)
    try:
        with pytest.raises(ApiError) as raised:
            _fetch(client)
    finally:
        client.close()
    assert raised.value.reason == "connection_error"
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.detail or "SSL" in raised.value.detail
    assert not any(connection.form for connection in gateway.connections), "nothing was sent"


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_requests_own_ca_variables_do_not_change_whom_tls_trusts(
    gateways: list[HostileGateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    ca = trustme.CA()
    # With CA_BUNDLE, a variable naming a bundle that does not exist changes nothing...
    monkeypatch.setenv(variable, str(tmp_path / "missing.pem"))
    gateway = start_gateway(gateways, valid_answer(), _tls(ca, "127.0.0.1"))
    client = _client(gateway, ca_bundle=_bundle(ca, tmp_path))
    try:
        assert _fetch(client) == 0
    finally:
        client.close()
    # ... and without it, one naming the gateway's CA does not make the gateway trusted.
    monkeypatch.setenv(variable, str(_bundle(ca, tmp_path)))
    gateway = start_gateway(gateways, valid_answer(), _tls(ca, "127.0.0.1"))
    client = _client(gateway, max_retries=0)
    try:
        with pytest.raises(ApiError) as raised:
            _fetch(client)
    finally:
        client.close()
    assert raised.value.reason == "connection_error"
    assert not any(connection.form for connection in gateway.connections), "nothing was sent"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_kept_alive_connection_is_reused(
    gateways: list[HostileGateway], tmp_path: Path, tls: bool
) -> None:
    ca = trustme.CA()
    gateway = start_gateway(gateways, keep_alive_answers(3), _tls(ca, "127.0.0.1") if tls else None)
    client = _client(gateway, ca_bundle=_bundle(ca, tmp_path) if tls else None)
    try:
        for _ in range(3):
            assert _fetch(client) == 0
    finally:
        client.close()
    assert len(gateway.connections) == 1
    assert _outcomes(client) == {"ok": 3}


def test_a_connection_the_gateway_closed_while_idle_costs_no_failure(
    gateways: list[HostileGateway],
) -> None:
    gateway = start_gateway(gateways, keep_alive_answers(1, then_close=True))
    client = _client(gateway, max_retries=0)  # a failure would not be retried away
    try:
        for attempt in range(3):
            assert _fetch(client) == 0
            # Seen closed before the next request: that one goes on a new connection.
            assert gateway.connections[attempt].wait_closed(5.0) is not None
    finally:
        client.close()
    assert len(gateway.connections) == 3
    assert _outcomes(client) == {"ok": 3}


def test_a_socks_proxy_is_refused_not_bypassed(
    gateways: list[HostileGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its connections would be out of the watchdog's sight: no exchange could be bounded.
    gateway = start_gateway(gateways, valid_answer())
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    for name in ("HTTP_PROXY", "http_proxy", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = _client(gateway, max_retries=2)
    try:
        with pytest.raises(ApiError) as raised:
            _fetch(client)
    finally:
        client.close()
    assert (raised.value.reason, raised.value.detail) == ("connection_error", "InvalidSchema")
    assert _outcomes(client) == {"connection_error": 1}, "not retried: it would fail alike"
    assert gateway.connections == []


def _pooled_connection(listener: socket.socket) -> tuple[HTTPConnectionPool, HTTPConnection]:
    """A connection of the guarded adapter's pool, connected to ``listener``."""
    host, port = listener.getsockname()
    adapter = GuardedAdapter()
    pool = adapter.poolmanager.connection_from_url(f"http://{host}:{port}/")
    assert isinstance(pool, HTTPConnectionPool)
    connection = pool._get_conn()
    assert isinstance(connection, HTTPConnection)
    connection.connect()
    return pool, connection


def test_a_connection_put_back_dropped_is_closed_at_once_and_a_live_one_kept() -> None:
    """A watchdog's shutdown can pass for the end of an answer, and urllib3 then puts the
    connection back: it must not sit open in the pool, holding the gateway's end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        pool, live = _pooled_connection(listener)
        served, _ = listener.accept()
        pool._put_conn(live)
        assert live.sock is not None  # nothing to read: kept alive

        pool, cut = _pooled_connection(listener)
        served_cut, _ = listener.accept()
        assert cut.sock is not None
        cut.sock.shutdown(socket.SHUT_RDWR)  # as the watchdog does
        pool._put_conn(cut)
        assert cut.sock is None  # closed, not kept
        served_cut.settimeout(5)
        assert served_cut.recv(1) == b""  # the gateway's end sees the close
        served.close()
        served_cut.close()
