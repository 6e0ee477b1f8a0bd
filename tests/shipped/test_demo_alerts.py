"""The compose demo raises exactly the alerts docs/deploying.md lists, about the subjects the
simulated world gives those parts, and its figures sit clear of every threshold: moving
every threshold of the mixin's _config by a tenth either way changes none of it, so no
alert of the demo flaps.

The exporter runs in demo mode with the compose file's projects and platforms; Prometheus
runs prometheus/prometheus.yml and the rules, as in the demo. Each alert's condition is
evaluated as an instant query, without its "for", so the test need not wait 15 minutes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _jsonnet
import pytest
import yaml
from conftest import installed, stop_process
from faultkit import Exporter
from promkit import Prometheus, wait_for
from test_prometheus_e2e import DEADLINE_SECONDS, settled, start_prometheus

from exporter.simulator.livedomains import FAILING_DOMAIN, NEAR_QUOTA_DOMAIN, PREFETCH_OFF_DOMAIN

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
DEPLOYING = ROOT / "docs" / "deploying.md"
MIXIN = ROOT / "mixin"
# How far every threshold moves, each way, without changing what the demo fires.
MARGIN = 0.1
# Labels of the series an alert is about; job and instance only say who scraped it.
SUBJECT = ("project_id", "platform", "domain", "kind")

Firing = set[tuple[str, tuple[tuple[str, str], ...]]]


def demo_environment() -> dict[str, str]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    environment: dict[str, str] = services["exporter"]["environment"]
    return environment


def advertised() -> set[str]:
    """The alerts docs/deploying.md says the demo raises."""
    (bullet,) = re.findall(r"^- Prometheus: .*?(?=^- )", DEPLOYING.read_text(), re.M | re.S)
    return set(re.findall(r"`(Ucdn\w+)`", bullet))


def alert_rules(scale: float) -> list[dict[str, Any]]:
    """The mixin's alerts with every numeric threshold of _config multiplied by ``scale``."""
    snippet = f"""
        local mixin = import 'mixin.libsonnet';
        local scaled = {{
          [name]: {scale} * mixin._config[name]
          for name in std.objectFields(mixin._config)
          if std.isNumber(mixin._config[name])
        }};
        (mixin + {{ _config+:: scaled }}).prometheusAlerts
    """
    groups = json.loads(_jsonnet.evaluate_snippet(str(MIXIN / "demo.jsonnet"), snippet))
    return [rule for group in groups["groups"] for rule in group["rules"]]


def firing(prometheus: Prometheus, scale: float) -> Firing:
    """(alert, subject) of every series whose alert condition holds now."""
    return {
        (rule["alert"], tuple((k, s["metric"][k]) for k in SUBJECT if k in s["metric"]))
        for rule in alert_rules(scale)
        for s in prometheus.query(rule["expr"])
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    installed("prometheus")
    environment = demo_environment()
    exporter = Exporter(
        [
            "--demo",
            *("--project-ids", environment["UCDN_EXPORTER_PROJECT_IDS"]),
            *("--platforms", environment["UCDN_EXPORTER_PLATFORMS"]),
        ]
    ).wait_started(timeout=30)
    try:
        directory = tmp_path_factory.mktemp("prometheus-demo")
        process, prometheus = start_prometheus(directory, exporter.port)
        try:
            end = time.monotonic() + DEADLINE_SECONDS
            wait_for("target up, rules run", lambda: settled(prometheus), prometheus, end)
            yield prometheus
        finally:
            stop_process(process)
    finally:
        exporter.stop()


def test_the_demo_raises_the_alerts_the_docs_list_and_no_other(demo: Prometheus) -> None:
    assert len(advertised()) == 5
    assert {alert for alert, _ in firing(demo, 1.0)} == advertised()


def test_each_alert_is_about_the_part_the_world_gives_it(demo: Prometheus) -> None:
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for alert, subject in firing(demo, 1.0):
        found.setdefault(alert, set()).add(subject)
    environment = demo_environment()
    projects = environment["UCDN_EXPORTER_PROJECT_IDS"].split(",")
    targets = {
        (("project_id", project), ("platform", platform))
        for project in projects
        for platform in environment["UCDN_EXPORTER_PLATFORMS"].split(",")
    }
    assert found["UcdnPrefetchTaskStuck"] == targets
    assert found["UcdnRefreshTaskStuck"] == targets

    def per_project(domain: str, kind: str | None) -> set[tuple[tuple[str, str], ...]]:
        kinds = () if kind is None else (("kind", kind),)
        return {(("project_id", p), ("domain", domain), *kinds) for p in projects}

    assert found["UcdnDomainQuotaNearlyUsed"] == per_project(NEAR_QUOTA_DOMAIN, "prefetch")
    assert found["UcdnDomainPrefetchDisabled"] == per_project(PREFETCH_OFF_DOMAIN, None)
    assert found["UcdnDomainFailureRatioHigh"] == per_project(FAILING_DOMAIN, "prefetch")


@pytest.mark.parametrize("scale", [1 - MARGIN, 1 + MARGIN])
def test_no_threshold_is_near_the_demos_figures(demo: Prometheus, scale: float) -> None:
    assert firing(demo, scale) == firing(demo, 1.0)
