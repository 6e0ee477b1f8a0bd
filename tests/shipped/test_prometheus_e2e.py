"""The dashboard and rules against a real Prometheus scraping the exporter in demo mode.

One stack per module: the exporter (two projects, both platforms) and Prometheus with
prometheus/prometheus.yml (pointed at the exporter's loopback port, scraping every few
seconds) and prometheus/rules.yml. Once the target is up and the rules have run, every
query of every dashboard panel and template variable goes through Prometheus' HTTP API
and must be valid and return data. Prometheus runs with no feature flag, as a stock
install does, so no panel may rely on one.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import installed, stop_process
from faultkit import Exporter
from promkit import Prometheus, run_prometheus, wait_for

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "ucdn-prefetch-overview.json"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules.yml"
PROJECTS = ("org-a", "org-b")
PLATFORMS = ("cdn", "dcdn")
# A demo collection takes one to two seconds on a loaded two-core machine.
SCRAPE_INTERVAL = "3s"
DEADLINE_SECONDS = 90.0
# Grafana's values for the variables: everything (the "All" option is ".*") or one target.
ALL = {"project_id": ".*", "platform": ".*"}
ONE = {"project_id": "org-b", "platform": "dcdn"}
# Grafana's built-in variables, as it would fill them for a short dashboard range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
# What the demo's data is built to show (docs/deploying.md lists it): each of these alerts
# is at least pending (their "for" is longer than a test run) once the rules have run.
DEMO_ALERTS = {
    # a domain over 80 % of a daily quota
    "UcdnDomainQuotaNearlyUsed",
    # a domain with prefetch switched off that has prefetch tasks
    "UcdnDomainPrefetchDisabled",
    # a refresh task unfinished for more than 10 minutes
    "UcdnRefreshTaskStuck",
    # a domain whose failure ratio stands out from its project's
    "UcdnDomainFailureRatioHigh",
}


def scrape_config(exporter_port: int) -> dict[str, Any]:
    """The shipped example, pointed at the test's exporter and made fast."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL,
        scrape_timeout=SCRAPE_INTERVAL,
        evaluation_interval="1s",
    )
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
    return config


def recorded_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return sorted({rule["record"] for g in groups for rule in g["rules"] if "record" in rule})


def start_exporter() -> Exporter:
    exporter = Exporter(
        [
            "--demo",
            *("--project-ids", ",".join(PROJECTS)),
            *("--platforms", ",".join(PLATFORMS)),
        ]
    )
    return exporter.wait_started(timeout=30)


def start_prometheus(
    directory: Path, exporter_port: int
) -> tuple[subprocess.Popen[bytes], Prometheus]:
    return run_prometheus(directory, scrape_config(exporter_port))


def settled(prometheus: Prometheus) -> bool:
    """Target up, several scrapes stored, every rule evaluated and every record present."""
    targets = prometheus.api("targets")["activeTargets"]
    if [target["health"] for target in targets] != ["up"]:
        return False
    if not prometheus.query('sum_over_time(up{job="ucdn-prefetch-exporter"}[5m]) >= 3'):
        return False
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    if any(rule["health"] != "ok" for rule in rules):
        return False
    # The prefetch records stand for the rest: one group evaluates every rule in turn, over
    # the same scrapes, so when these exist every record with data exists too.
    return all(prometheus.query(name) for name in recorded_names() if ":ucdn_prefetch_" in name)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    directory = tmp_path_factory.mktemp("prometheus")
    installed("prometheus")  # skip or fail before starting anything
    exporter = start_exporter()
    try:
        process, server = start_prometheus(directory, exporter.port)
        try:
            end = time.monotonic() + DEADLINE_SECONDS
            wait_for("target up, scrapes stored, rules run", lambda: settled(server), server, end)
            yield server
        finally:
            stop_process(process)
    finally:
        exporter.stop()


def settings() -> dict[str, str]:
    """The default of every text box variable, as Grafana fills it until a user types."""
    return {
        variable["name"]: variable["query"]
        for variable in board()["templating"]["list"]
        if variable["type"] == "textbox"
    }


def substitute(expr: str, values: dict[str, str]) -> str:
    """Fill dashboard and built-in variables as Grafana does; none may be left over."""
    filled = expr
    for name, value in {**values, **settings(), **BUILTINS}.items():
        filled = filled.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in filled, f"unfilled variable in {filled}"
    return filled


def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_targets() -> list[tuple[str, str, bool]]:
    """(panel title, expression, instant) of every query of every panel."""
    return [
        (panel["title"], target["expr"], bool(target.get("instant")))
        for panel in board()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_target_is_up(prometheus: Prometheus) -> None:
    (target,) = prometheus.api("targets")["activeTargets"]
    assert target["health"] == "up"
    assert target["labels"]["job"] == "ucdn-prefetch-exporter"
    assert target["lastError"] == ""


@pytest.mark.parametrize("selection", [ALL, ONE], ids=["all", "one-target"])
@pytest.mark.parametrize(
    ("title", "expr", "instant"),
    panel_targets(),
    ids=[f"{title}:{expr[:40]}" for title, expr, _ in panel_targets()],
)
def test_every_panel_query_returns_data(
    prometheus: Prometheus, title: str, expr: str, instant: bool, selection: dict[str, str]
) -> None:
    filled = substitute(expr, selection)
    result = prometheus.query(filled) if instant else prometheus.query_range(filled)
    assert result, f"{title}: {filled} returned nothing"
    if selection is ONE:
        # Where a series keeps the target labels, the selection must have narrowed it.
        for label, value in ONE.items():
            kept = {series["metric"].get(label, value) for series in result}
            assert kept == {value}, f"{title}: {filled} returned other targets"


def test_scrape_timeout_line_needs_no_extra_scrape_metrics(prometheus: Prometheus) -> None:
    # The stock Prometheus really lacks the feature flag's series...
    assert prometheus.query("scrape_timeout_seconds") == []
    (panel,) = [p for p in board()["panels"] if p["title"].startswith("Scrape duration")]
    (line,) = [t["expr"] for t in panel["targets"] if "$scrape_timeout" in t["expr"]]
    # ...and the panel still draws its timeout, at the dashboard setting's value.
    (series,) = prometheus.query_range(substitute(line, ALL))
    assert {float(value) for _, value in series["values"]} == {float(settings()["scrape_timeout"])}


def label_values_queries() -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every label_values() template variable."""
    found = []
    for variable in board()["templating"]["list"]:
        if variable["type"] != "query" or variable["query"].startswith("query_result("):
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        found.append((variable["name"], match[1], match[2]))
    return found


@pytest.mark.parametrize(
    ("name", "selector", "label"),
    label_values_queries(),
    ids=[name for name, _, _ in label_values_queries()],
)
def test_every_template_variable_offers_the_demo_targets(
    prometheus: Prometheus, name: str, selector: str, label: str
) -> None:
    filled = substitute(selector, ALL)
    expected = {"project_id": set(PROJECTS), "platform": set(PLATFORMS)}[name]
    # Grafana asks the label values endpoint; older setups ask for the series.
    values = prometheus.api(f"label/{label}/values", **{"match[]": filled})
    assert set(values) == expected
    series = prometheus.api("series", **{"match[]": filled})
    assert {s[label] for s in series} == expected


def grafana_query_result_line(series: dict[str, Any]) -> str:
    """A query_result() answer's line as Grafana's Prometheus data source writes it for a
    variable's regex: the name, the labels in Prometheus' order, the value, the time."""
    metric = dict(series["metric"])
    name = metric.pop("__name__", "")
    labels = ",".join(f'{key}="{value}"' for key, value in metric.items())
    timestamp, value = series["value"]
    return f"{name}{{{labels}}} {value} {int(float(timestamp) * 1000)}"


def test_the_project_variable_offers_every_demo_project_by_its_name(
    prometheus: Prometheus,
) -> None:
    (variable,) = [v for v in board()["templating"]["list"] if v["name"] == "project_id"]
    query = re.fullmatch(r"query_result\((.+)\)", variable["query"])
    assert query, variable["query"]
    # Grafana's regex is JavaScript's: /…/ around it, (?<name>…) for a named group.
    regex = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options = {}
    for series in prometheus.query(query[1]):
        match = regex.search(grafana_query_result_line(series))
        assert match, series
        options[match["value"]] = match["text"]
    assert set(options) == set(PROJECTS)
    names = {
        s["metric"]["project_id"]: s["metric"]["project_name"]
        for s in prometheus.query('ucdn_project_info{project_name!=""}')
    }
    # A project's name where it has one, else its ID.
    assert options == {project: names.get(project, project) for project in PROJECTS}


def test_the_datasource_variable_selects_prometheus() -> None:
    (datasource,) = [v for v in board()["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"


@pytest.mark.parametrize("name", recorded_names())
def test_every_recording_rule_produces_data(prometheus: Prometheus, name: str) -> None:
    result = prometheus.query(name)
    assert result
    if name.startswith("project_id_platform"):
        targets = {(s["metric"]["project_id"], s["metric"]["platform"]) for s in result}
        assert targets == {(p, f) for p in PROJECTS for f in PLATFORMS}


def test_every_rule_evaluates_without_error(prometheus: Prometheus) -> None:
    groups = prometheus.api("rules")["groups"]
    assert {group["name"] for group in groups} == {"ucdn_prefetch.rules", "ucdn_prefetch.alerts"}
    for rule in (rule for group in groups for rule in group["rules"]):
        assert rule["health"] == "ok", rule
        assert not rule.get("lastError"), rule


def test_healthy_demo_does_not_page_about_the_exporter(prometheus: Prometheus) -> None:
    alerts = prometheus.api("alerts")["alerts"]
    names = {alert["labels"]["alertname"] for alert in alerts}
    assert not names & {
        "UcdnPrefetchExporterDown",
        "UcdnPrefetchUpstreamDown",
        "UcdnDomainQuotaCollectionDown",
    }


def test_demo_data_raises_the_alerts_it_is_built_to_show(prometheus: Prometheus) -> None:
    alerts = prometheus.api("alerts")["alerts"]
    active = {a["labels"]["alertname"] for a in alerts if a["state"] in {"pending", "firing"}}
    assert active >= DEMO_ALERTS, DEMO_ALERTS - active
