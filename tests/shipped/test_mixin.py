"""The monitoring mixin (mixin/): the committed rule file is what it renders, its alerts pass
mixtool's lint rules, its _config reaches every alert, and its dashboard is the committed
JSON whose limits come from that same _config."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import _jsonnet
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dashboards"))

from overview import common, domains, quota, refresh  # noqa: E402  (needs the path above)

MIXIN = ROOT / "mixin"
SCRIPT = MIXIN / "render.py"
RULES = ROOT / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "dashboards" / "ucdn-prefetch-overview.json"
# mixtool's rules (pkg/mixer/lint.go), with Go's regexp semantics: "." stops at a newline.
CAMEL_CASE = re.compile(r"([A-Z]+[a-z0-9]+)+")
GO_TEMPLATE = re.compile(r"\{\{.+}\}")
SENTENCE = re.compile(r"[A-Z].+\.")
SEVERITIES = {"critical", "warning", "info"}


def load_script() -> ModuleType:
    """mixin/render.py as a module, as `python mixin/render.py` runs it."""
    spec = importlib.util.spec_from_file_location("mixin_render", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(expression: str) -> Any:
    """A jsonnet expression's value, with the mixin as ``mixin``."""
    snippet = f"local mixin = import 'mixin.libsonnet'; {expression}"
    return json.loads(_jsonnet.evaluate_snippet(str(MIXIN / "test.jsonnet"), snippet))


@functools.cache
def mixin() -> dict[str, Any]:
    """The mixin's four parts, as it comes."""
    parts: dict[str, Any] = evaluate(
        "{ config: mixin._config, rules: mixin.prometheusRules,"
        " alerts: mixin.prometheusAlerts, dashboards: mixin.grafanaDashboards }"
    )
    return parts


def by_name(alert_groups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alerts of a ``prometheusAlerts`` by name."""
    return {rule["alert"]: rule for group in alert_groups["groups"] for rule in group["rules"]}


def alerts(overrides: str = "{}") -> dict[str, dict[str, Any]]:
    """The mixin's alerts by name, with ``overrides`` (jsonnet) added to the mixin."""
    return by_name(evaluate(f"(mixin + {overrides}).prometheusAlerts"))


def lint(groups: list[dict[str, Any]]) -> list[str]:
    """What `mixtool lint` says of alert groups: one line per broken rule."""
    errors = []
    for group in groups:
        if len(group["rules"]) > 20:
            errors.append(f"{group['name']}: more than 20 rules")
        if len(group["name"]) > 40:
            errors.append(f"{group['name']}: group name over 40 characters")
        for rule in group["rules"]:
            name = rule["alert"]
            notes = rule.get("annotations", {})
            if not CAMEL_CASE.fullmatch(name):
                errors.append(f"{name}: not CamelCase")
            if len(name) > 40:
                errors.append(f"{name}: over 40 characters")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                errors.append(f"{name}: severity not one of {sorted(SEVERITIES)}")
            if not GO_TEMPLATE.search(notes.get("description", "")):
                errors.append(f"{name}: description missing or without a template")
            summary = notes.get("summary")
            if summary is None:
                errors.append(f"{name}: no summary")
            elif GO_TEMPLATE.search(summary):
                errors.append(f"{name}: summary uses a template")
            elif not SENTENCE.fullmatch(summary):
                errors.append(f"{name}: summary is not a capitalised sentence with a period")
    return errors


def test_the_committed_rule_file_is_what_the_mixin_renders() -> None:
    rendered = load_script().render()
    assert rendered == RULES.read_text(encoding="utf-8")
    groups = yaml.safe_load(rendered)["groups"]
    parts = mixin()
    assert [group["name"] for group in groups] == [
        *(group["name"] for group in parts["rules"]["groups"]),
        *(group["name"] for group in parts["alerts"]["groups"]),
    ]
    # The same rules, only their fields ordered for reading.
    assert groups == parts["rules"]["groups"] + parts["alerts"]["groups"]


@pytest.mark.e2e
def test_check_mode_passes_on_the_committed_file_and_fails_on_a_stale_one(
    tmp_path: Path,
) -> None:
    ok = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stale = tmp_path / "rules.yml"
    stale.write_text(RULES.read_text().replace("> 7200", "> 7300"))
    command = [sys.executable, str(SCRIPT), "--output", str(stale)]
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert checked.returncode == 1
    assert "+        expr: project_id_platform:ucdn_prefetch_oldest" in checked.stdout
    assert "make mixin" in checked.stderr
    subprocess.run(command, check=True)
    assert stale.read_text() == RULES.read_text()


def test_the_alerts_pass_mixtools_lint_rules() -> None:
    groups = mixin()["alerts"]["groups"]
    assert sum(len(group["rules"]) for group in groups) == 12
    assert lint(groups) == []


def test_the_lint_rules_catch_what_mixtool_catches() -> None:
    notes = {"summary": "Something broke.", "description": "{{ $labels.job }} broke."}
    good: dict[str, Any] = {
        "alert": "UcdnSomethingBroken",
        "labels": {"severity": "warning"},
        "annotations": notes,
    }
    assert lint([{"name": "g", "rules": [good]}]) == []
    broken = [
        {**good, "alert": "ucdn_something_broken"},
        {**good, "alert": "UcdnSomethingBrokenWithANameFarTooLongToRead"},
        {**good, "labels": {"severity": "page"}},
        {**good, "annotations": {**notes, "description": "It broke."}},
        {**good, "annotations": {**notes, "summary": "{{ $labels.job }} broke."}},
        {**good, "annotations": {**notes, "summary": "something broke."}},
        {**good, "annotations": {**notes, "summary": "Something broke"}},
        {**good, "annotations": {**notes, "summary": "Something\nbroke."}},
    ]
    for rule in broken:
        assert len(lint([{"name": "g", "rules": [rule]}])) == 1, rule
    assert lint([{"name": "g", "rules": [good] * 21}]) == ["g: more than 20 rules"]


def test_the_job_selector_comes_from_config() -> None:
    default = by_name(mixin()["alerts"])["UcdnPrefetchExporterDown"]["expr"]
    assert default == 'up{job="ucdn-prefetch-exporter"} == 0'
    custom = alerts("""{ _config+:: { exporterSelector: 'job="cdn-exporter"' } }""")
    assert custom["UcdnPrefetchExporterDown"]["expr"] == 'up{job="cdn-exporter"} == 0'


def test_every_threshold_of_config_changes_the_alerts_that_use_it() -> None:
    config = mixin()["config"]
    thresholds = [name for name, value in config.items() if not isinstance(value, str)]
    assert len(thresholds) == 9
    default = by_name(mixin()["alerts"])
    # One evaluation for them all: each threshold tripled in turn.
    tripled = evaluate(
        "{ [name]: (mixin + { _config+:: { [name]: 3 * mixin._config[name] } }).prometheusAlerts"
        f" for name in {json.dumps(thresholds)} }}"
    )
    for name in thresholds:
        changed = by_name(tripled[name])
        moved = {alert for alert in default if changed[alert]["expr"] != default[alert]["expr"]}
        assert moved, f"_config.{name} reaches no alert"
        for alert in moved:
            # The description quotes the limit it fires at, so it moves with the expression.
            old, new = (a[alert]["annotations"]["description"] for a in (default, changed))
            assert old != new, f"{alert} describes a stale {name}"


def test_descriptions_name_their_limits_as_people_do() -> None:
    found = alerts("{ _config+:: { prefetchTaskAgeSeconds: 3600, refreshTaskAgeSeconds: 90 } }")
    assert "the limit is 1 hour." in found["UcdnPrefetchTaskStuck"]["annotations"]["description"]
    assert (
        "the limit is 90 seconds." in (found["UcdnRefreshTaskStuck"]["annotations"]["description"])
    )
    default = by_name(mixin()["alerts"])["UcdnPrefetchFailureRatioHigh"]
    assert "limit 10%," in default["annotations"]["description"]


def test_every_alert_links_its_runbook_section() -> None:
    for name, alert in by_name(mixin()["alerts"]).items():
        anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == f"alert-{name.lower()}"


def test_the_mixins_dashboard_is_the_committed_json() -> None:
    (name, board), *others = mixin()["dashboards"].items()
    assert not others
    assert name == DASHBOARD.name
    assert board == json.loads(DASHBOARD.read_text())
    # mixtool refuses a dashboard without these.
    assert board["uid"] and board["title"]


def test_the_dashboard_reads_its_limits_from_the_mixins_config() -> None:
    config = mixin()["config"]
    assert config == common.LIMITS
    drawn = {
        "prefetchTaskAgeSeconds": common.TASK_AGE_LIMIT_SECONDS,
        "prefetchFailureRatio": common.FAILURE_RATIO_LIMIT,
        "prefetchP90Seconds": common.P90_LIMIT_SECONDS,
        "refreshTaskAgeSeconds": refresh.REFRESH_AGE_LIMIT_SECONDS,
        "domainQuotaUsedRatio": quota.QUOTA_USED_LIMIT,
        "domainFailureRatio": domains.DOMAIN_FAILURE_RATIO_LIMIT,
    }
    for name, limit in drawn.items():
        assert limit == config[name], name


@pytest.mark.e2e  # std.manifestYamlDoc takes seconds
def test_the_readmes_example_renders_with_its_overrides(tmp_path: Path) -> None:
    # As jb vendors it: the whole repository under vendor/ucdn-prefetch-exporter.
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "ucdn-prefetch-exporter").symlink_to(ROOT)
    readme = (MIXIN / "README.md").read_text()
    (example,) = re.findall(r"```jsonnet\n(.*?)```", readme, re.DOTALL)
    files = json.loads(
        _jsonnet.evaluate_snippet(
            str(tmp_path / "example.jsonnet"), example, jpathdir=[str(vendor)]
        )
    )
    rendered = {name: yaml.safe_load(text) for name, text in files.items()}
    found = {
        rule["alert"]: rule
        for group in rendered["ucdn-alerts.yaml"]["groups"]
        for rule in group["rules"]
    }
    assert found["UcdnPrefetchExporterDown"]["expr"] == 'up{job="cdn-exporter"} == 0'
    assert found["UcdnPrefetchTaskStuck"]["expr"].endswith("> 14400")
    (group,) = rendered["ucdn-rules.yaml"]["groups"]
    assert group["name"] == "ucdn_prefetch.rules"
