"""The Prometheus exporter-toolkit web configuration file (``--web.config.file``).

Operators reuse the file they already give node_exporter: ``tls_server_config``,
``http_server_config`` and ``basic_auth_users``, parsed as strictly as the toolkit does
(an unknown key is an error). Relative file names are resolved against the directory of
the configuration file, and certificates and keys are loaded at start-up so that a bad
file stops the exporter before it listens rather than failing every scrape.

Differences from the Go toolkit, each forced by Python's :mod:`ssl` module:

* ``cert`` and ``key`` inline are refused: :mod:`ssl` loads a certificate chain only from
  files, and writing the private key to a temporary file is worse than asking for a path.
  ``client_ca`` inline is supported.
* ``RequestClientCert`` asks for no certificate when no client CA is configured (Go would
  accept any certificate without checking it, which grants nothing) and verifies a given
  certificate against ``client_ca_file``/``client_ca`` when one is.
* ``RequireAnyClientCert`` (alias ``RequireClientCert``) requires a client CA and
  verifies the certificate against it: :mod:`ssl` cannot demand a certificate without
  verifying it, so this is the closest behaviour that is not weaker.
* ``curve_preferences`` is checked and then ignored: Python 3.11 can set only a single
  ECDH curve, not a preference list, so OpenSSL's default groups (all of which the toolkit
  also allows) are used. A warning is logged.
* ``http_server_config.http2`` is accepted and ignored: the server speaks HTTP/1.1 only,
  and Prometheus falls back to it.
* ``rate_limit`` and ``auth_excluded_paths`` are not supported and are refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo

from exporter.settings.secret_files import regular_file_problem
from exporter.web.auth import BasicAuth, bcrypt_cost

_log = logging.getLogger(__name__)

# Go's tls.CipherSuites() names (the secure TLS 1.2 suites the toolkit accepts) and
# their OpenSSL spellings. TLS 1.3 suites are not configurable, as in Go.
_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
_CURVES = frozenset({"CurveP256", "CurveP384", "CurveP521", "X25519"})

# The toolkit allows only these headers, and restricts the values of some of them.
_ALLOWED_HEADERS: dict[str, frozenset[str] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class WebConfigError(Exception):
    """The web configuration file is unusable; the message is one line naming the fault."""


# The toolkit's client certificate policies (Go's tls.ClientAuthType names).
ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # the toolkit's older spelling of RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
_REQUIRES_CLIENT_CERT = frozenset(
    {"RequireAnyClientCert", "RequireClientCert", "RequireAndVerifyClientCert"}
)
_NEEDS_CLIENT_CA = _REQUIRES_CLIENT_CERT | {"VerifyClientCertIfGiven"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class TLSServerConfig(_Strict):
    """``tls_server_config``: the server certificate and the client certificate policy."""

    cert_file: Path
    key_file: Path
    cert: str | None = None
    key: SecretStr | None = None
    client_ca_file: Path | None = None
    client_ca: str | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    client_allowed_sans: list[str] = []
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"
    cipher_suites: list[str] = []
    curve_preferences: list[str] = []
    prefer_server_cipher_suites: bool = True

    @pydantic.field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _resolve_against_config_dir(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        base_dir = (info.context or {}).get("base_dir")
        if path is None or path.is_absolute() or base_dir is None:
            return path
        return Path(base_dir) / path

    @pydantic.field_validator("cipher_suites", "curve_preferences")
    @classmethod
    def _known_names(cls, names: list[str], info: ValidationInfo) -> list[str]:
        known, what = (
            (_CIPHER_SUITES, "cipher suite")
            if info.field_name == "cipher_suites"
            else (_CURVES, "curve")
        )
        if unknown := [name for name in names if name not in known]:
            raise ValueError(f"unknown {what} {unknown[0]!r}")
        return names

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.cert is not None or self.key is not None:
            raise ValueError("inline cert and key are not supported; use cert_file and key_file")
        if self.client_ca_file is not None and self.client_ca is not None:
            raise ValueError("set client_ca_file or client_ca, not both")
        has_ca = self.client_ca_file is not None or self.client_ca is not None
        if has_ca and self.client_auth_type == "NoClientCert":
            raise ValueError("a client CA is configured but client_auth_type is NoClientCert")
        if self.client_auth_type in _NEEDS_CLIENT_CA and not has_ca:
            raise ValueError(
                f"client_auth_type {self.client_auth_type} needs client_ca_file: "
                "Python's ssl module verifies every client certificate it requires"
            )
        if self.client_allowed_sans and self.client_auth_type not in _REQUIRES_CLIENT_CERT:
            raise ValueError(
                "client_allowed_sans needs client_auth_type RequireAnyClientCert "
                "or RequireAndVerifyClientCert"
            )
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is newer than max_version")
        return self


class HTTPServerConfig(_Strict):
    """``http_server_config``: extra response headers (``http2`` is accepted, see above)."""

    http2: bool = True
    headers: dict[str, str] = {}

    @pydantic.field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name not in _ALLOWED_HEADERS:
                raise ValueError(f"HTTP header {name!r} can not be configured")
            allowed_values = _ALLOWED_HEADERS[name]
            if allowed_values is not None and value not in allowed_values:
                raise ValueError(f"{name} must be one of {sorted(allowed_values)}")
            # Go's httpguts.ValidHeaderFieldValue: no control character but tab.
            if any((ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F for char in value):
                raise ValueError(f"{name} must not contain control characters")
        return headers


class WebConfig(_Strict):
    """A parsed web configuration file; the empty file means plain HTTP and no auth."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, SecretStr] = {}

    @pydantic.field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, password_hash in users.items():
            if ":" in user:
                raise ValueError(f"user name {user!r} contains ':'")
            try:
                bcrypt_cost(password_hash.get_secret_value())
            except ValueError as err:
                raise ValueError(f"user {user!r}: {err}") from None
        return users

    @property
    def headers(self) -> dict[str, str]:
        """Extra headers to add to every response."""
        return dict(self.http_server_config.headers)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build a fresh server-side TLS context, or None when TLS is not configured.

        Raises WebConfigError when a certificate, key or CA file cannot be loaded.
        """
        tls = self.tls_server_config
        if tls is None:
            return None
        if tls.curve_preferences:
            _log.warning("web config: curve_preferences is ignored (see the README)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
        context.maximum_version = _TLS_VERSIONS[tls.max_version]
        if not tls.prefer_server_cipher_suites:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if tls.cipher_suites:
            context.set_ciphers(":".join(_CIPHER_SUITES[name] for name in tls.cipher_suites))
        _load_server_certificate(context, tls)
        _load_client_policy(context, tls)
        if tls.cipher_suites and _TLS_VERSIONS[tls.min_version] < ssl.TLSVersion.TLSv1_3:
            _check_cipher_suites_fit_the_key(context, tls)
        return context

    def client_certificate_allowed(self, peer_certificate: Mapping[str, Any]) -> bool:
        """Whether a verified client certificate carries one of ``client_allowed_sans``."""
        tls = self.tls_server_config
        if tls is None or not tls.client_allowed_sans:
            return True
        allowed = {_normalise_san(value) for value in tls.client_allowed_sans}
        presented = {
            _normalise_san(value) for _, value in peer_certificate.get("subjectAltName", ())
        }
        return not allowed.isdisjoint(presented)

    def basic_auth(self) -> BasicAuth | None:
        """The password check for ``basic_auth_users``, or None when none are configured."""
        if not self.basic_auth_users:
            return None
        return BasicAuth(
            {user: secret.get_secret_value() for user, secret in self.basic_auth_users.items()}
        )


def _normalise_san(value: str) -> str:
    # Python prints IPv6 SANs expanded and upper-case; Go compares the compressed form.
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


def _load_server_certificate(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    cert_file, key_file = tls.cert_file, tls.key_file
    files = (
        ("cert_file", cert_file),
        ("key_file", key_file),
        ("client_ca_file", tls.client_ca_file),
    )
    for key, path in files:
        problem = regular_file_problem(path) if path is not None else None
        if problem:
            raise WebConfigError(f"tls_server_config.{key}: {path} {problem}")

    def refuse_passphrase() -> bytes:
        # Without this callback OpenSSL would prompt on the terminal for an encrypted key.
        raise WebConfigError(f"tls_server_config.key_file: {key_file} is encrypted")

    try:
        context.load_cert_chain(cert_file, key_file, password=refuse_passphrase)
    except ssl.SSLError as err:
        raise WebConfigError(
            f"tls_server_config: cannot load cert_file {cert_file} with key_file "
            f"{key_file} ({err.reason or 'not a matching PEM certificate and key'})"
        ) from None


def _check_cipher_suites_fit_the_key(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    """Refuse suites that none of can sign with the certificate's key (an ECDSA suite with an
    RSA key): every TLS 1.2 handshake would fail. Told by the server's first handshake step,
    in memory, against a client offering every suite the file may name."""
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context.set_ciphers(":".join(_CIPHER_SUITES.values()))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server)
    server = context.wrap_bio(to_server, to_client, server_side=True)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()  # the ClientHello
    try:
        server.do_handshake()  # chooses a suite, or finds none
    except ssl.SSLWantReadError:
        return
    except ssl.SSLError as err:
        if err.reason != "NO_SHARED_CIPHER":
            return  # not what is checked here (a protocol version OpenSSL refuses, say)
    raise WebConfigError(
        f"tls_server_config.cipher_suites: none can be used with the key of cert_file "
        f"{tls.cert_file} (an ECDSA suite needs an ECDSA key, an RSA suite an RSA key)"
    )


def _load_client_policy(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    try:
        if tls.client_ca_file is not None:
            context.load_verify_locations(cafile=tls.client_ca_file)
        elif tls.client_ca is not None:
            context.load_verify_locations(cadata=tls.client_ca)
    except (OSError, ValueError) as err:
        source = tls.client_ca_file or "client_ca"
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or "not PEM"
        raise WebConfigError(
            f"tls_server_config: cannot load client CA {source} ({reason})"
        ) from None
    has_ca = tls.client_ca_file is not None or tls.client_ca is not None
    if tls.client_auth_type in _REQUIRES_CLIENT_CERT:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.client_auth_type == "VerifyClientCertIfGiven" or (
        tls.client_auth_type == "RequestClientCert" and has_ca
    ):
        context.verify_mode = ssl.CERT_OPTIONAL


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read, validate and load a web configuration file; raise WebConfigError if unusable."""
    config_path = Path(path)
    problem = regular_file_problem(config_path)
    if problem:
        raise WebConfigError(f"web config {config_path}: {problem}")
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not UTF-8 text"
        raise WebConfigError(f"web config {config_path}: cannot read ({reason})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise WebConfigError(f"web config {config_path}: {_yaml_problem(err)}") from None
    if document is None:
        document = {}
    try:
        config = WebConfig.model_validate(
            document, context={"base_dir": config_path.parent.absolute()}
        )
    except pydantic.ValidationError as err:
        raise WebConfigError(f"web config {config_path}: {_first_problem(err)}") from None
    try:
        config.ssl_context()
    except WebConfigError as err:
        raise WebConfigError(f"web config {config_path}: {err}") from None
    return config


def _yaml_problem(err: yaml.YAMLError) -> str:
    # str(err) quotes the offending line, which may hold a password hash.
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    return "invalid YAML"


def _first_problem(err: pydantic.ValidationError) -> str:
    problem = err.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in problem["loc"]) or "top level"
    message = problem["msg"].removeprefix("Value error, ")
    return f"{location}: {message}"
