"""``/sd``: this replica's targets in Prometheus' HTTP service discovery format.

Prometheus' ``http_sd_configs`` asks for a JSON list of target groups; each group here is one
target of this replica, addressed to this exporter, with the ``/probe`` parameters as
``__param_*`` labels: a job with ``metrics_path: /probe`` then scrapes each target once, on
the replica that collects it. The address is the one Prometheus used to reach ``/sd`` (the
request's Host header), unless one is configured.
"""

import json
import re
from collections.abc import Iterable

from exporter.collection.catalogue import TargetEntry

# A host name or IPv4 address, or a bracketed IPv6 address, then an optional port: what a
# client may put in Host and Prometheus accepts as a target, nothing that could close the
# JSON string or reach a label another way.
_ADDRESS = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def scrape_address(value: str | None) -> str | None:
    """``value`` when it is a ``host[:port]`` of safe characters and a real port, else None."""
    if value is None:
        return None
    match = _ADDRESS.fullmatch(value)
    if match is None:
        return None
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        return None
    return value


def target_groups(entries: Iterable[TargetEntry], address: str) -> list[dict[str, object]]:
    """One group per target, addressed to ``address``, naming the target as /probe takes it."""
    return [
        {
            "targets": [address],
            "labels": {
                "__param_project_id": entry.target.project_label,
                "__param_platform": entry.target.platform,
            },
        }
        for entry in entries
    ]


def sd_document(entries: Iterable[TargetEntry], address: str) -> bytes:
    """The UTF-8 JSON body of ``/sd``: ``[]`` when this replica has no target."""
    return json.dumps(target_groups(entries, address), separators=(",", ":")).encode()
