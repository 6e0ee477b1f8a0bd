"""The overview dashboard composed from its rows and variables, as Grafana's JSON model.

The SDK has no model for the `__inputs`/`__requires` blocks of grafana.com-style import,
so `shareable` adds them to the built dict; everything else comes from the builders.
Every panel query goes through the `${datasource}` variable, so the same file works when
imported (the DS_PROMETHEUS input becomes the variable's default) and when provisioned
from disk (the variable falls back to the default data source).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from overview import domains, health, in_flight, now, quota, refresh, speed
from overview.common import DATASOURCE, Panel
from overview.variables import variables

UID = "ucdn-prefetch-overview"
# Top to bottom: what the user asks first, the exporter's own health last.
ROWS: tuple[tuple[str, Callable[[], Iterator[Panel]]], ...] = (
    (now.TITLE, now.panels),
    (in_flight.TITLE, in_flight.panels),
    (speed.TITLE, speed.panels),
    (refresh.TITLE, refresh.panels),
    (domains.TITLE, domains.panels),
    (quota.TITLE, quota.panels),
    (health.TITLE, health.panels),
)
# Decoded JSON: the SDK's encoder yields plain dicts, lists and scalars.
Json = dict[str, Any]


def dashboard() -> dash.Dashboard:
    """The dashboard's settings and variables, without rows."""
    return (
        dash.Dashboard("UCDN prefetch overview")
        .uid(UID)
        .description(
            "Prefetch (cache warm-up) and refresh (purge) tasks and the domains' daily "
            "quotas of UCDN gateways as seen by ucdn-prefetch-exporter: what is queued, what "
            "is warming, how fast, how much quota is left, and whether the exporter can be "
            "trusted."
        )
        .tags(["ucdn", "cdn", "prefetch", "ucdn-prefetch-exporter"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .variables(variables())
    )


def build() -> Json:
    """The dashboard as Grafana's JSON model, panels numbered in layout order."""
    builder = dashboard()
    panel_id = 0
    for title, row in ROWS:
        panel_id += 1
        builder = builder.with_row(dash.Row(title).id(panel_id))
        for panel in row():
            panel_id += 1
            builder = builder.with_panel(panel.id(panel_id).datasource(DATASOURCE))
    encoded: Json = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return shareable(encoded)


def shareable(board: Json) -> Json:
    """Add what grafana.com-style import needs and the SDK has no model for."""
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "Prometheus that scrapes ucdn-prefetch-exporter",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.1.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *(
                {"type": "panel", "id": kind, "name": kind, "version": ""}
                for kind in sorted({p["type"] for p in board["panels"] if p["type"] != "row"})
            ),
        ],
        **board,
    }
