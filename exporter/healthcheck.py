"""``ucdn-prefetch-exporter healthcheck``: ask the running exporter's ``/-/healthy``.

For Docker's HEALTHCHECK and Kubernetes exec probes. It reads the same listen address and
web configuration file as the server (flag, else environment, else default), connects to
loopback (or to the listen host when that is a specific address) with the server's scheme,
and exits 0 on a 200, else 1, printing one line either way (Docker keeps it in the health
log; exit 2 is reserved there). It needs no API keys and imports only the standard library
and PyYAML, so it starts in a fraction of the server's start-up time.

TLS is not verified: the peer is our own process on loopback. When the web config requires
a client certificate the check cannot present one, so it can only show that the server
completes (TLS 1.3) or refuses for want of a certificate (TLS 1.2) a handshake, which is
reported as such.
"""

import argparse
import http.client
import os
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from exporter.settings.address import DEFAULT_PORT, parse_listen_address

LISTEN_VARIABLE = "UCDN_EXPORTER_LISTEN_ADDRESS"
WEB_CONFIG_VARIABLE = "UCDN_EXPORTER_WEB_CONFIG_FILE"
_CLIENT_CERT_REQUIRED = {"RequireAnyClientCert", "RequireClientCert", "RequireAndVerifyClientCert"}
# OpenSSL's reasons for a server that wants a client certificate we do not have.
_NO_CERTIFICATE_ALERTS = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}


class UnhealthyError(Exception):
    """The check failed; the message is the one line to print."""


def build_parser() -> argparse.ArgumentParser:
    """The server's spellings of the two settings the check needs, and a timeout."""
    parser = argparse.ArgumentParser(
        prog="ucdn-prefetch-exporter healthcheck",
        description="Exit 0 when the exporter on this host answers /-/healthy with 200.",
    )
    parser.add_argument("--listen-address", "--web.listen-address", dest="listen_address")
    parser.add_argument("--web-config-file", "--web.config.file", dest="web_config_file")
    parser.add_argument("--timeout-seconds", type=float, default=3.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 healthy, 1 not (argparse's own usage errors exit 2)."""
    args = build_parser().parse_args(argv)
    address = args.listen_address or os.environ.get(LISTEN_VARIABLE) or f":{DEFAULT_PORT}"
    web_config = args.web_config_file or os.environ.get(WEB_CONFIG_VARIABLE)
    try:
        print(check(address, Path(web_config) if web_config else None, args.timeout_seconds))
    except UnhealthyError as problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


def check(address: str, web_config: Path | None, timeout: float) -> str:
    """Ask ``/-/healthy``; return the success line or raise :class:`UnhealthyError`."""
    try:
        host, port = parse_listen_address(address)
    except ValueError:
        raise UnhealthyError(f"{LISTEN_VARIABLE} (--listen-address) is not host:port") from None
    host = loopback_for(host)
    tls = _tls_settings(web_config)
    if tls is None:
        return _get_healthy(http.client.HTTPConnection(host, port, timeout=timeout), "http")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own process on loopback
    if tls.get("client_auth_type") in _CLIENT_CERT_REQUIRED:
        return _tls_handshake_only(host, port, context, timeout)
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    return _get_healthy(connection, "https")


def loopback_for(listen_host: str) -> str:
    """Where to connect: loopback for a wildcard listen address, else the address itself."""
    if listen_host in ("", "0.0.0.0"):  # noqa: S104 - compared, not bound
        return "127.0.0.1"
    if listen_host == "::":
        return "::1"
    return listen_host


def _tls_settings(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UnhealthyError(f"cannot read the web config ({WEB_CONFIG_VARIABLE})") from None
    tls = document.get("tls_server_config") if isinstance(document, dict) else None
    return tls if isinstance(tls, dict) else None


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/-/healthy"


def _get_healthy(connection: http.client.HTTPConnection, scheme: str) -> str:
    url = _url(scheme, connection.host, connection.port)
    try:
        connection.request("GET", "/-/healthy")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        raise UnhealthyError(f"{url}: {_reason(error)}") from None
    finally:
        connection.close()
    if status != 200:
        raise UnhealthyError(f"{url} answered {status}")
    return f"healthy: {url} answered 200"


def _tls_handshake_only(host: str, port: int, context: ssl.SSLContext, timeout: float) -> str:
    url = _url("https", host, port)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.getpeercert(binary_form=True)
    except ssl.SSLError as error:
        if error.reason not in _NO_CERTIFICATE_ALERTS:
            raise UnhealthyError(f"{url}: TLS {error.reason or 'error'}") from None
    except OSError as error:
        raise UnhealthyError(f"{url}: {_reason(error)}") from None
    return f"healthy: {url} answers TLS (a client certificate is required: HTTP not checked)"


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS {error.reason or 'error'}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__
