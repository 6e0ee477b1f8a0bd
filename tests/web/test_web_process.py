"""The exporter process behind its web configuration: TLS, basic auth, and a bad file."""

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
from conftest import REPO
from faultkit import Exporter
from simfaults import SimulatedApi

from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


@pytest.fixture
def secured(
    tmp_path: Path,
    simulator: Callable[..., SimulatedApi],
    start_exporter: Callable[..., Exporter],
) -> Iterator[tuple[str, str]]:
    """The exporter serving HTTPS with basic auth; yields its base URL and the CA bundle."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n"
        "  cert_file: server.pem\n"
        "  key_file: server.pem\n"
        "basic_auth_users:\n"
        f"  prometheus: {hashed}\n"
    )
    api = simulator(StaticDataset({("", False): generate_tasks(20, 3, now=int(time.time()))}))
    exporter = start_exporter(
        "--web.config.file",
        str(tmp_path / "web.yml"),
        "--api-url",
        api.url,
        env={
            "UCDN_EXPORTER_PUBLIC_KEY": "demo-public-key",
            "UCDN_EXPORTER_PRIVATE_KEY": "demo-private-key-not-a-secret",
        },
    )
    assert exporter.url.startswith("https://127.0.0.1:")
    yield exporter.url, str(tmp_path / "ca.pem")


def test_scrape_over_tls_with_the_right_password(secured: tuple[str, str]) -> None:
    url, bundle = secured
    response = requests.get(
        url + "metrics", auth=("prometheus", PASSWORD), verify=bundle, timeout=30
    )
    assert response.status_code == 200
    assert 'ucdn_prefetch_up{platform="cdn",project_id="default"} 1.0' in response.text


@pytest.mark.parametrize(
    "auth",
    [None, ("prometheus", "wrong"), ("nobody", PASSWORD)],
    ids=["missing", "wrong", "unknown"],
)
def test_no_scrape_without_the_right_password(
    secured: tuple[str, str], auth: tuple[str, str] | None
) -> None:
    url, bundle = secured
    response = requests.get(url + "metrics", auth=auth, verify=bundle, timeout=30)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "ucdn_prefetch" not in response.text


@pytest.mark.parametrize("path", ["-/healthy", "-/ready"])
def test_probes_need_no_password_but_reveal_nothing(secured: tuple[str, str], path: str) -> None:
    url, bundle = secured
    response = requests.get(url + path, verify=bundle, timeout=30)
    assert response.status_code == 200
    assert response.text == "OK\n"
    # A path that only starts like a probe is not one.
    assert requests.get(url + path + "/", verify=bundle, timeout=30).status_code == 401


def test_a_silent_tls_client_does_not_hold_up_scrapes(secured: tuple[str, str]) -> None:
    url, bundle = secured
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port)):  # connects, never says hello
        started = time.monotonic()
        for _ in range(3):
            response = requests.get(
                url + "metrics", auth=("prometheus", PASSWORD), verify=bundle, timeout=30
            )
            assert response.status_code == 200
        assert time.monotonic() - started < 8  # generous: not held for the header timeout


def test_plain_http_to_the_tls_port_gets_no_metrics(secured: tuple[str, str]) -> None:
    url, _ = secured
    response = requests.get(url.replace("https", "http") + "metrics", timeout=10)
    assert response.status_code == 400
    assert "ucdn_prefetch" not in response.text


# A well-formed bcrypt hash at cost 31: about 13 hours to check, or to start with.
COST_31_HASH = "$2b$31$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
RSA_KEY_ECDSA_SUITES = (
    "tls_server_config:\n  cert_file: rsa.pem\n  key_file: rsa.pem\n"
    "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.pem\n",
            ("tls_server_config.cert_file", "missing.pem"),
        ),
        (f"basic_auth_users:\n  prometheus: '{COST_31_HASH}'\n", ("basic_auth_users", "cost 31")),
        (RSA_KEY_ECDSA_SUITES, ("tls_server_config.cipher_suites", "rsa.pem")),
    ],
    ids=["missing-certificate", "bcrypt-cost-31", "ecdsa-suites-rsa-key"],
)
def test_a_bad_web_config_stops_start_up_in_one_line(
    tmp_path: Path, text: str, named: tuple[str, str]
) -> None:
    trustme.CA().issue_cert(
        "127.0.0.1", key_type=trustme.KeyType.RSA
    ).private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "rsa.pem"))
    (tmp_path / "web.yml").write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--demo",
            "--web.config.file",
            str(tmp_path / "web.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(part in lines[0] for part in named), lines[0]
