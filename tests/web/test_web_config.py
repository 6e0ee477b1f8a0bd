"""The web configuration file: what it accepts, what it refuses and how, and BasicAuth."""

from __future__ import annotations

import base64
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.web.auth import AuthVerdict, BasicAuth
from exporter.web.web_config import WebConfigError, load_web_config

PASSWORD_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def config_dir(ca: trustme.CA, tmp_path: Path) -> Path:
    """A directory holding tls/ (server cert, key, client CA) for relative references."""
    tls = tmp_path / "tls"
    tls.mkdir()
    server_cert = ca.issue_cert("localhost")
    server_cert.cert_chain_pems[0].write_to_path(tls / "cert.pem")
    server_cert.private_key_pem.write_to_path(tls / "key.pem")
    ca.cert_pem.write_to_path(tls / "ca.pem")
    return tmp_path


def write(config_dir: Path, text: str) -> Path:
    path = config_dir / "web.yml"
    path.write_text(text)
    return path


TLS = "tls_server_config:\n  cert_file: tls/cert.pem\n  key_file: tls/key.pem\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_empty_file_means_plain_http_without_auth(config_dir: Path) -> None:
    config = load_web_config(write(config_dir, ""))
    assert config.ssl_context() is None
    assert config.basic_auth() is None
    assert config.headers == {}


def test_tls_only_with_paths_relative_to_the_file(config_dir: Path) -> None:
    config = load_web_config(write(config_dir, TLS))
    assert config.tls_server_config is not None
    assert config.tls_server_config.cert_file == config_dir / "tls" / "cert.pem"
    context = config.ssl_context()
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
    assert config.basic_auth() is None


def test_auth_only(config_dir: Path) -> None:
    config = load_web_config(write(config_dir, f"basic_auth_users:\n  prom: {PASSWORD_HASH}\n"))
    assert config.ssl_context() is None
    auth = config.basic_auth()
    assert auth is not None
    assert auth.verify(basic("prom", "s3cret")) is AuthVerdict.ALLOWED
    assert auth.verify(basic("prom", "wrong")) is AuthVerdict.DENIED


def test_tls_auth_headers_and_client_certificates(config_dir: Path) -> None:
    text = (
        TLS
        + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: tls/ca.pem\n"
        + "  min_version: TLS13\n"
        + "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        + "http_server_config:\n  http2: false\n  headers:\n    X-Content-Type-Options: nosniff\n"
        + f"basic_auth_users:\n  prom: '{PASSWORD_HASH}'\n"
    )
    config = load_web_config(write(config_dir, text))
    context = config.ssl_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert config.headers == {"X-Content-Type-Options": "nosniff"}
    assert config.basic_auth() is not None


@pytest.mark.parametrize(
    ("policy", "verify_mode"),
    [
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequestClientCert", ssl.CERT_OPTIONAL),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("RequireClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types_with_a_ca(
    config_dir: Path, policy: str, verify_mode: ssl.VerifyMode
) -> None:
    text = TLS + f"  client_auth_type: {policy}\n  client_ca_file: tls/ca.pem\n"
    context = load_web_config(write(config_dir, text)).ssl_context()
    assert context is not None
    assert context.verify_mode is verify_mode


def test_client_allowed_sans_matches_normalised_values(config_dir: Path) -> None:
    text = (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: tls/ca.pem\n"
        "  client_allowed_sans: ['2001:db8::1', prometheus.example]\n"
    )
    config = load_web_config(write(config_dir, text))
    assert config.client_certificate_allowed(
        {"subjectAltName": (("IP Address", "2001:DB8:0:0:0:0:0:1\n"),)}
    )
    assert config.client_certificate_allowed({"subjectAltName": (("DNS", "prometheus.example"),)})
    assert not config.client_certificate_allowed({"subjectAltName": (("DNS", "other.example"),)})
    assert not config.client_certificate_allowed({})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tls_server_confg: {}\n", "tls_server_confg"),
        (TLS + "  bogus: 1\n", "tls_server_config.bogus"),
        ("rate_limit:\n  interval: 1s\n", "rate_limit"),
        (TLS.replace("tls/cert.pem", "tls/missing.pem"), "cert_file"),
        ("tls_server_config:\n  cert_file: tls/cert.pem\n", "key_file"),
        (TLS + "  client_auth_type: Sometimes\n", "tls_server_config.client_auth_type"),
        (TLS + "  min_version: TLS14\n", "tls_server_config.min_version"),
        (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "min_version"),
        (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file"),
        (TLS + "  client_ca_file: tls/ca.pem\n", "NoClientCert"),
        (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "tls_server_config.cipher_suites"),
        (TLS + "  cert: inline\n  key: inline\n", "inline"),
        (TLS.replace("cert_file: tls/cert.pem", "cert_file: tls/key.pem"), "cert_file"),
        ("http_server_config:\n  headers:\n    Server: x\n", "http_server_config.headers"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "X-Frame-Options"),
    ],
)
def test_invalid_files_name_the_key_at_fault(config_dir: Path, text: str, named: str) -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(config_dir, text))
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_bad_bcrypt_hash_is_named_but_never_echoed(config_dir: Path) -> None:
    not_a_hash = "$2y$10$this-is-no-bcrypt-hash-but-could-be-a-password"
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(config_dir, f"basic_auth_users:\n  prom: '{not_a_hash}'\n"))
    assert "basic_auth_users" in str(caught.value)
    assert "prom" in str(caught.value)
    assert "this-is-no-bcrypt" not in str(caught.value)


def test_yaml_errors_do_not_quote_the_file(config_dir: Path) -> None:
    text = f"basic_auth_users:\n  prom: '{PASSWORD_HASH}'\n  [broken\n"
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(config_dir, text))
    assert "invalid YAML at line" in str(caught.value)
    assert PASSWORD_HASH not in str(caught.value)


def test_missing_file() -> None:
    with pytest.raises(WebConfigError, match=r"no-such-web\.yml"):
        load_web_config("/nonexistent/no-such-web.yml")


@pytest.fixture(scope="module")
def auth() -> BasicAuth:
    return BasicAuth({"prom": PASSWORD_HASH, "other": PASSWORD_HASH.replace("$2b$", "$2y$")})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("prom", "s3cret"), True),
        (basic("other", "s3cret"), True),
        ("basic " + basic("prom", "s3cret").split()[1], True),
        (basic("prom", "wrong"), False),
        (basic("prom", ""), False),
        (basic("nobody", "s3cret"), False),
        (basic("prom", "s3cret" + "x" * 80), False),
        (None, False),
        ("", False),
        ("Bearer abc", False),
        ("Basic !!!not-base64!!!", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        ("Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), False),
    ],
)
def test_basic_auth_check(auth: BasicAuth, header: str | None, expected: bool) -> None:
    assert (auth.verify(header) is AuthVerdict.ALLOWED) is expected


@pytest.mark.e2e  # seconds on loopback by design
def test_basic_auth_remembers_successes_only_and_stays_bounded() -> None:
    users = {
        name: bcrypt.hashpw(name.encode(), bcrypt.gensalt(rounds=12)).decode()
        for name in ("prom", "a", "b")
    }
    auth = BasicAuth(users, cache_size=2)

    def timed(header: str, expected: AuthVerdict) -> float:
        begin = time.perf_counter()
        assert auth.verify(header) is expected
        return time.perf_counter() - begin

    first = timed(basic("prom", "prom"), AuthVerdict.ALLOWED)
    # Cost 12 takes ~0.2 s; a remembered success is a hash and a dictionary look-up.
    assert timed(basic("prom", "prom"), AuthVerdict.ALLOWED) < first / 10
    # Failures pay bcrypt every time, and a flood of them evicts nothing.
    for attempt in range(3):
        assert timed(basic("prom", f"wrong-{attempt}"), AuthVerdict.DENIED) > first / 10
    assert timed(basic("prom", "wrong-0"), AuthVerdict.DENIED) > first / 10
    assert timed(basic("prom", "prom"), AuthVerdict.ALLOWED) < first / 10
    # The memory is bounded: a third success evicts the least recently used one.
    timed(basic("a", "a"), AuthVerdict.ALLOWED)
    assert timed(basic("prom", "prom"), AuthVerdict.ALLOWED) < first / 10  # now "a" is oldest
    timed(basic("b", "b"), AuthVerdict.ALLOWED)
    assert timed(basic("prom", "prom"), AuthVerdict.ALLOWED) < first / 10
    assert timed(basic("a", "a"), AuthVerdict.ALLOWED) > first / 10


@pytest.mark.e2e  # seconds on loopback by design
def test_basic_auth_is_busy_at_once_when_checks_are_queued() -> None:
    slow_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=13)).decode()
    auth = BasicAuth({"prom": slow_hash}, max_waiting=2)
    assert auth.verify(basic("prom", "s3cret")) is AuthVerdict.ALLOWED  # remembered
    with ThreadPoolExecutor(2) as pool:
        queued = [pool.submit(auth.verify, basic("prom", f"wrong-{n}")) for n in range(2)]
        time.sleep(0.1)  # both are in bcrypt's queue now (one check takes ~0.5 s)
        begin = time.perf_counter()
        assert auth.verify(basic("prom", "another-wrong")) is AuthVerdict.BUSY
        assert auth.verify(basic("nobody", "s3cret")) is AuthVerdict.BUSY
        # The remembered password does not queue at all.
        assert auth.verify(basic("prom", "s3cret")) is AuthVerdict.ALLOWED
        assert time.perf_counter() - begin < 0.2
        assert [future.result() for future in queued] == [AuthVerdict.DENIED] * 2
    assert auth.verify(basic("prom", "another-wrong")) is AuthVerdict.DENIED


def test_unknown_users_pay_bcrypt_like_known_ones() -> None:
    slow_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=12)).decode()
    auth = BasicAuth({"prom": slow_hash})
    begin = time.perf_counter()
    assert auth.verify(basic("prom", "wrong")) is AuthVerdict.DENIED
    known = time.perf_counter() - begin
    begin = time.perf_counter()
    assert auth.verify(basic("nobody", "wrong")) is AuthVerdict.DENIED
    unknown = time.perf_counter() - begin
    # Generous: the same order of magnitude, not a dictionary miss that returns at once.
    assert unknown > known / 5
