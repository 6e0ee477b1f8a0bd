"""The refresh, domain and quota panels turn red exactly where their alerts fire: the
limits in dashboards/overview/ equal the thresholds in prometheus/rules.yml, and the
committed JSON carries them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dashboards"))

from overview.domains import DOMAIN_FAILURE_RATIO_LIMIT  # noqa: E402  (needs the path above)
from overview.quota import QUOTA_USED_LIMIT  # noqa: E402
from overview.refresh import REFRESH_AGE_LIMIT_SECONDS  # noqa: E402

RULES = ROOT / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "dashboards" / "ucdn-prefetch-overview.json"
# alert -> (the limit the dashboard uses, the panel drawing it)
LIMITS = {
    "UcdnRefreshTaskStuck": (
        REFRESH_AGE_LIMIT_SECONDS,
        "Age of the oldest unfinished refresh task",
    ),
    "UcdnDomainQuotaNearlyUsed": (QUOTA_USED_LIMIT, "Daily quota used by domain"),
    "UcdnDomainFailureRatioHigh": (DOMAIN_FAILURE_RATIO_LIMIT, "Prefetch URLs by domain"),
}


def alert_expr(name: str) -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


def panel(title: str) -> dict[str, Any]:
    board = json.loads(DASHBOARD.read_text())
    (found,) = [p for p in board["panels"] if p.get("title") == title]
    return dict(found)


@pytest.mark.parametrize("alert", LIMITS)
def test_the_alert_fires_at_the_dashboard_limit(alert: str) -> None:
    limit, _ = LIMITS[alert]
    # The first comparison of the expression is the alert's threshold.
    match = re.search(r">\s*([0-9.]+)", alert_expr(alert))
    assert match, alert_expr(alert)
    assert float(match[1]) == limit


@pytest.mark.parametrize("alert", LIMITS)
def test_the_panel_turns_red_at_the_limit(alert: str) -> None:
    limit, title = LIMITS[alert]
    steps = panel(title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"value": limit, "color": "red"} in steps, steps
