"""The healthcheck mode against a real exporter process: plain, TLS + basic auth, mTLS, none."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import trustme
from conftest import REPO, exporter_args
from faultkit import Exporter, closed_port
from simfaults import SimulatedApi

pytestmark = pytest.mark.e2e


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("UCDN_", "UCLOUD_"))}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "exporter", "healthcheck", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=30,
        check=False,
    )


def tls_web_config(tmp_path: Path, extra: str = "", auth: bool = True) -> tuple[Path, trustme.CA]:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    hashed = bcrypt.hashpw(b"secret-password", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
        + extra
        + (f"basic_auth_users:\n  prometheus: {hashed}\n" if auth else "")
    )
    return path, ca


def test_plain_http_by_environment(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    exporter = start_exporter(*exporter_args(simulator()))
    result = healthcheck(env={"UCDN_EXPORTER_LISTEN_ADDRESS": f":{exporter.port}"})
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == f"healthy: http://127.0.0.1:{exporter.port}/-/healthy answered 200"
    )
    assert result.stderr == ""


@pytest.mark.parametrize("auth", [False, True], ids=["tls", "tls-and-basic-auth"])
def test_tls_is_followed_from_the_web_config_and_needs_no_password_or_api_key(
    auth: bool,
    tmp_path: Path,
    simulator: Callable[..., SimulatedApi],
    start_exporter: Callable[..., Exporter],
) -> None:
    web_config, _ = tls_web_config(tmp_path, auth=auth)
    exporter = start_exporter(*exporter_args(simulator()), "--web.config.file", str(web_config))
    result = healthcheck(
        env={
            "UCDN_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{exporter.port}",
            "UCDN_EXPORTER_WEB_CONFIG_FILE": str(web_config),
        }
    )
    assert result.returncode == 0, result.stderr
    assert "https://127.0.0.1:" in result.stdout and "answered 200" in result.stdout
    # Without the web config it speaks plain HTTP to a TLS port: that is not healthy.
    plain = healthcheck("--listen-address", f"127.0.0.1:{exporter.port}")
    assert plain.returncode == 1
    assert len(plain.stderr.strip().splitlines()) == 1


def test_required_client_certificate_is_checked_at_the_tls_level(
    tmp_path: Path,
    simulator: Callable[..., SimulatedApi],
    start_exporter: Callable[..., Exporter],
) -> None:
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    web_config, _ = tls_web_config(
        tmp_path,
        "  client_ca_file: client-ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    exporter = start_exporter(*exporter_args(simulator()), "--web.config.file", str(web_config))
    result = healthcheck(
        "--web.listen-address", f"127.0.0.1:{exporter.port}", "--web.config.file", str(web_config)
    )
    assert result.returncode == 0, result.stderr
    assert "client certificate is required" in result.stdout
    exporter.stop()
    gone = healthcheck(
        "--web.listen-address", f"127.0.0.1:{exporter.port}", "--web.config.file", str(web_config)
    )
    assert gone.returncode == 1


def test_nothing_listening_exits_1_in_one_line_within_the_timeout() -> None:
    port = closed_port()
    started = time.monotonic()
    result = healthcheck("--listen-address", f"127.0.0.1:{port}", "--timeout-seconds", "2")
    assert time.monotonic() - started < 2 + 5  # generous: a Python start on a busy machine
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"unhealthy: http://127.0.0.1:{port}/-/healthy: connection refused"
    ]


def test_a_bad_listen_address_is_unhealthy_not_a_traceback() -> None:
    result = healthcheck(env={"UCDN_EXPORTER_LISTEN_ADDRESS": "nonsense"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "unhealthy: UCDN_EXPORTER_LISTEN_ADDRESS (--listen-address) is not host:port"
    ]


def test_healthcheck_does_not_import_the_server() -> None:
    code = (
        "import sys; from exporter.entry import main; "
        "main(['healthcheck', '--listen-address', '127.0.0.1:1']); "
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'prometheus', "
        "'cheroot', 'requests', 'urllib3', 'exporter.cli'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
