"""Addresses: the listen address (``host:port``) and the API's URL, checked without
importing the settings machinery.

Separate from :mod:`exporter.settings.config` so that ``healthcheck`` can read the address in a
process that starts in a fraction of the time pydantic would take to import, and so that
every source of an API URL (a setting, a UCloud profile, an accounts file) checks it alike.
"""

from urllib.parse import urlsplit

DEFAULT_PORT = 9866


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); an empty host means every interface."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an exporter listens on all interfaces by default


_URL_PROBLEM = "must be an http:// or https:// URL with a valid host and port"


def http_url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL with a host and a valid port, None when it is one.

    The answer never quotes the URL: its user-info part may hold a password.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return _URL_PROBLEM
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if port == 0:
        return _URL_PROBLEM
    return None
