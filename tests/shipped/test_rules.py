"""The Prometheus rules in prometheus/rules.yml: promtool accepts them, their unit tests
pass, and every alert carries what an on-call engineer needs, is tested both ways and has
its section in docs/runbook.md, as every recording rule has its row there."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import promtool

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "prometheus" / "rules_test.yml"
RUNBOOK_PREFIX = "https://github.com/ucdn-prefetch-exporter/ucdn-prefetch-exporter/blob/main/docs/runbook.md#alert-"
# level:metric:operations, each part snake_case; the metric keeps one of our prefixes.
RECORD_NAME = re.compile(
    r"^[a-z][a-z0-9_]*:ucdn_(prefetch|refresh|domain|api)_[a-z0-9_]+:[a-z0-9_]+$"
)


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    # The unit tests must be able to fail: raise a threshold and they catch it.
    rules = RULES.read_text().replace("> 7200", "> 99999")
    assert rules != RULES.read_text()
    (tmp_path / "rules.yml").write_text(rules)
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    result = promtool("test", "rules", str(tmp_path / "rules_test.yml"))
    assert result.returncode != 0
    assert "UcdnPrefetchTaskStuck" in result.stdout + result.stderr


def test_groups_hold_recording_rules_and_alerts_apart() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    kinds = {group["name"]: {"alert" in rule for rule in group["rules"]} for group in groups}
    assert kinds == {"ucdn_prefetch.rules": {False}, "ucdn_prefetch.alerts": {True}}


def test_recording_rules_follow_the_naming_convention() -> None:
    records = [rule["record"] for rule in load_rules() if "record" in rule]
    assert records
    for name in records:
        assert RECORD_NAME.match(name), name


def test_the_expected_alerts_exist() -> None:
    assert {rule["alert"] for rule in alerts()} == {
        "UcdnPrefetchExporterDown",
        "UcdnPrefetchUpstreamDown",
        "UcdnRefreshUpstreamDown",
        "UcdnPrefetchApiErrorsHigh",
        "UcdnPrefetchTaskStuck",
        "UcdnPrefetchFailureRatioHigh",
        "UcdnPrefetchCompletionSlow",
        "UcdnRefreshTaskStuck",
        "UcdnDomainQuotaNearlyUsed",
        "UcdnDomainPrefetchDisabled",
        "UcdnDomainFailureRatioHigh",
        "UcdnDomainQuotaCollectionDown",
    }


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: str(rule["alert"]))
def test_alert_has_annotations_severity_and_runbook(alert: dict[str, Any]) -> None:
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["runbook_url"] == RUNBOOK_PREFIX + alert["alert"].lower()
    assert alert["labels"]["severity"] in {"critical", "warning"}
    # A "for" clause keeps one bad scrape from paging anybody.
    assert alert.get("for")


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_is_unit_tested_firing_and_not_firing(alert: dict[str, Any]) -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert["alert"]
    ]
    assert any(case["exp_alerts"] for case in cases), "no history that fires it"
    assert any(not case["exp_alerts"] for case in cases), "no history that does not fire it"


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_runbook_url_points_at_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        github_anchor(line.lstrip("#")) for line in runbook.splitlines() if line.startswith("#")
    }
    alerts = [
        rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert alerts
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.split("#")[0].endswith("/docs/runbook.md"), url
        assert url.split("#", 1)[1] in anchors, f"{alert['alert']}: no runbook section for {url}"


def runbook_headings() -> set[str]:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    return {line.lstrip("#").strip() for line in runbook.splitlines() if line.startswith("## ")}


def test_every_alert_has_a_runbook_section_and_every_section_an_alert() -> None:
    sections = {h.removeprefix("Alert: ") for h in runbook_headings() if h.startswith("Alert: ")}
    assert sections == {rule["alert"] for rule in alerts()}


def test_every_recording_rule_has_its_row_in_the_runbook() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_:0-9]+)` \|", runbook, re.MULTILINE))
    records = {rule["record"] for rule in load_rules() if "record" in rule}
    assert len(records) == 14
    assert rows == records
