"""The web configuration file: what it accepts, what it refuses and how, and BasicAuth."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

import bcrypt
import pytest
import trustme
from conftest import started

from exporter.web.auth import AuthVerdict, BasicAuth
from exporter.web.server import WebServer
from exporter.web.web_config import WebConfigError, load_web_config

PASSWORD_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def hello_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


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


# A well-formed hash at the given cost: the checks read the cost and never run bcrypt.
def hash_at_cost(cost: int) -> str:
    return f"$2b${cost:02d}$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"


@pytest.mark.parametrize("cost", [15, 16, 31])
def test_a_bcrypt_cost_no_scrape_can_wait_for_is_refused_at_once(
    config_dir: Path, cost: int
) -> None:
    begin = time.perf_counter()
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(config_dir, f"basic_auth_users:\n  prom: '{hash_at_cost(cost)}'\n"))
    message = str(caught.value)
    assert "basic_auth_users" in message and "'prom'" in message
    assert f"cost {cost} is above 14" in message
    assert "\n" not in message
    assert hash_at_cost(cost) not in message
    with pytest.raises(ValueError, match="above 14"):  # nor can BasicAuth be built with it
        BasicAuth({"prom": hash_at_cost(cost)})
    assert time.perf_counter() - begin < 1  # refused, not hashed (cost 16 takes 4.5 s)


def test_bcrypt_costs_up_to_14_are_accepted(config_dir: Path) -> None:
    text = f"basic_auth_users:\n  a: '{hash_at_cost(4)}'\n  b: '{hash_at_cost(14)}'\n"
    assert set(load_web_config(write(config_dir, text)).basic_auth_users) == {"a", "b"}


@pytest.fixture
def rsa_dir(ca: trustme.CA, tmp_path: Path) -> Path:
    """A directory holding rsa.pem (an RSA server certificate and key) and ca.pem."""
    leaf = ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)
    leaf.private_key_and_cert_chain_pem.write_to_path(tmp_path / "rsa.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    return tmp_path


RSA = "tls_server_config:\n  cert_file: rsa.pem\n  key_file: rsa.pem\n"
ECDSA_SUITES = "[TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA]"


@pytest.mark.parametrize(
    "versions", ["", "  max_version: TLS12\n"], ids=["tls12-and-13", "tls12-only"]
)
def test_cipher_suites_none_of_which_fits_the_key_are_refused(rsa_dir: Path, versions: str) -> None:
    text = RSA + f"  cipher_suites: {ECDSA_SUITES}\n" + versions
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(rsa_dir, text))
    message = str(caught.value)
    assert "tls_server_config.cipher_suites" in message and "rsa.pem" in message
    assert "\n" not in message


def test_rsa_suites_with_an_ecdsa_key_are_refused(config_dir: Path) -> None:
    text = TLS + "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
    with pytest.raises(WebConfigError, match=r"tls_server_config\.cipher_suites"):
        load_web_config(write(config_dir, text))


def test_suites_that_fit_the_key_are_served(serve: list[WebServer], rsa_dir: Path) -> None:
    text = RSA + "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "
    text += "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\n"
    server = started(
        serve,
        WebServer(hello_app, "127.0.0.1", 0, web_config=load_web_config(write(rsa_dir, text))),
    )
    client = ssl.create_default_context(cafile=str(rsa_dir / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        client.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.cipher() == ("ECDHE-RSA-AES256-GCM-SHA384", "TLSv1.2", 256)


def test_cipher_suites_are_not_checked_when_only_tls_13_is_allowed(rsa_dir: Path) -> None:
    # TLS 1.3 suites are not configurable and sign with any key: the list is never used.
    text = RSA + f"  cipher_suites: {ECDSA_SUITES}\n  min_version: TLS13\n"
    assert load_web_config(write(rsa_dir, text)).ssl_context() is not None


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
