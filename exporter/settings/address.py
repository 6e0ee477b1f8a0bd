"""The listen address (``host:port``), parsed without importing the settings machinery.

Separate from :mod:`exporter.settings.config` so that ``healthcheck`` can read the address in a
process that starts in a fraction of the time pydantic would take to import.
"""

DEFAULT_PORT = 9866


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); an empty host means every interface."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an exporter listens on all interfaces by default
