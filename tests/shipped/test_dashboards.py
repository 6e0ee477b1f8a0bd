"""The Grafana overview dashboard: the committed JSON is exactly what dashboards/generate.py
builds, and it is importable, provisionable and complete (descriptions, units, variables,
queries over metrics that exist)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter import metrics

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "dashboards" / "generate.py"
DASHBOARD = ROOT / "dashboards" / "ucdn-prefetch-overview.json"
RULES = ROOT / "prometheus" / "rules.yml"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
# The metric contract (exporter/metrics.py), as the dashboard may query it (samples).
CONTRACT = metrics.sample_names()
# Recording rules only alerts read: the domain tables keep the platform variable, which
# the per-domain rules (platforms summed) cannot follow.
BOARDS_ALERT_ONLY_RECORDS = {
    "project_id_domain_kind_status:ucdn_domain_urls:sum",
    "project_id_domain_kind:ucdn_domain_urls_finished:sum",
    "project_id_domain_kind:ucdn_domain_url_failures_per_finished:ratio",
    "project_id_kind:ucdn_domain_url_failures_per_finished:ratio",
}
# Rows whose series are per project only (no platform label).
PER_PROJECT = {
    "Daily quota used by domain",
    "Prefetch switch per domain",
    "Quota collection up per project",
    "Domains dropped from the quota panels",
}
# ------------------------------------------------------------------------------------
# Series a stock Prometheus writes for every scrape, without any feature flag.
PROMETHEUS_OWN = {"scrape_duration_seconds"}
# Series only --enable-feature=extra-scrape-metrics adds: no panel may need them.
EXTRA_SCRAPE_METRICS = {"scrape_timeout_seconds", "scrape_sample_limit", "scrape_body_size_bytes"}
# Queries about the exporter process rather than one project and platform.
EXPORTER_WIDE = {
    "API requests by outcome",
    "Scrape duration against the scrape timeout",
    "Refresh API requests by outcome",
}
# A metric name, not a dashboard variable such as $scrape_timeout.
METRIC = re.compile(r"(?<!\$)\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+|ucdn_[a-z0-9_]+|scrape_[a-z_]+)\b")


def load_generator() -> ModuleType:
    """The script as a module, importing its sibling package as `python generate.py` does."""
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("dashboards_generate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but the rows; a board without one fails the test that asks."""
    found = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert found, "the dashboard has no panel"
    return found


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every query, with its panel's title; a board without one fails the test that asks."""
    found = [(panel["title"], target) for panel in panels(board) for target in panel["targets"]]
    assert found, "the dashboard has no query"
    return found


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def alert_threshold(name: str) -> float:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return float(re.findall(r">\s*([0-9.]+)", expr)[0])


@pytest.mark.e2e
def test_committed_json_is_what_the_script_generates() -> None:
    assert load_generator().render() == DASHBOARD.read_text()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_check_mode_fails_on_a_stale_copy_and_writing_fixes_it(tmp_path: Path) -> None:
    stale = tmp_path / "dashboard.json"
    stale.write_text(DASHBOARD.read_text().replace("Tasks by status", "Tasks"))
    command = [sys.executable, str(SCRIPT), "--output", str(stale)]
    checked = subprocess.run(
        [*command, "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 1
    assert '+      "title": "Tasks by status",' in checked.stdout
    subprocess.run(command, timeout=60, check=True)
    assert stale.read_text() == DASHBOARD.read_text()


def test_generator_modules_stay_small_and_in_one_package() -> None:
    # The guide's limit is about 400 lines; the generator keeps under 300, one row a module.
    modules = sorted(SCRIPT.parent.rglob("*.py"))
    assert {module.name for module in modules} >= {"generate.py", "board.py", "common.py"}
    for module in modules:
        lines = len(module.read_text().splitlines())
        assert lines <= 300, f"{module.relative_to(ROOT)} has {lines} lines"


def test_identity_is_stable(board: dict[str, Any]) -> None:
    assert board["uid"] == "ucdn-prefetch-overview"
    assert board["title"] == "UCDN prefetch overview"
    # An id would make import overwrite whatever dashboard has it in the target Grafana.
    assert "id" not in board


def test_importable_through_grafana_com_style_inputs(board: dict[str, Any]) -> None:
    (source_input,) = board["__inputs"]
    assert source_input["name"] == "DS_PROMETHEUS"
    assert source_input["type"] == "datasource"
    assert source_input["pluginId"] == "prometheus"
    # The input is only the variable's default: panels never name it, so a provisioned
    # copy, where nothing replaces ${DS_PROMETHEUS}, still works.
    datasource = board["templating"]["list"][0]
    assert datasource["current"]["value"] == "${DS_PROMETHEUS}"
    text = json.dumps(board)
    assert text.count("${DS_PROMETHEUS}") == 1


def test_every_panel_and_query_uses_the_datasource_variable(board: dict[str, Any]) -> None:
    variable = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(board):
        assert panel["datasource"] == variable, panel["title"]
    for title, target in targets(board):
        assert target["datasource"] == variable, title


def test_variables(board: dict[str, Any]) -> None:
    datasource, project, platform, _ = board["templating"]["list"]
    assert (datasource["name"], datasource["type"], datasource["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for variable, label in ((project, "project_id"), (platform, "platform")):
        assert variable["name"] == label
        assert variable["type"] == "query"
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["datasource"]["uid"] == "${datasource}"
    assert platform["query"].startswith("label_values(ucdn_prefetch_up")
    assert platform["query"].endswith(", platform)")
    # Projects are shown by name (ucdn_project_info), their ID the value the queries use.
    assert project["query"].startswith("query_result(")
    assert "ucdn_project_info" in project["query"] and "ucdn_prefetch_up" in project["query"]
    assert "(?<value>" in project["regex"] and "(?<text>" in project["regex"]
    # Choosing a project narrows the platforms offered.
    assert "$project_id" in platform["query"]


def test_rows_in_order(board: dict[str, Any]) -> None:
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == [
        "Now",
        "In flight",
        "Speed",
        "Refresh",
        "Domains",
        "Daily quotas",
        "Exporter health",
    ]


def test_every_panel_has_a_description_a_query_and_a_unit(board: dict[str, Any]) -> None:
    for panel in panels(board):
        assert len(panel.get("description", "")) > 80, panel["title"]
        assert panel["targets"], panel["title"]
        units = {panel["fieldConfig"]["defaults"].get("unit")}
        units |= {
            prop["value"]
            for override in panel["fieldConfig"]["overrides"]
            for prop in override["properties"]
            if prop["id"] == "unit"
        }
        units.add((panel.get("options") or {}).get("yAxis", {}).get("unit"))
        assert units - {None}, f"{panel['title']} has no unit"


def test_panel_ids_unique_and_grid_without_overlap(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_queries_use_only_metrics_that_exist(board: dict[str, Any]) -> None:
    known = CONTRACT | recorded_names() | PROMETHEUS_OWN
    used = {name for _, target in targets(board) for name in METRIC.findall(target["expr"])}
    assert used
    assert used <= known, used - known


def test_no_query_needs_a_prometheus_feature_flag(board: dict[str, Any]) -> None:
    used = {name for _, target in targets(board) for name in METRIC.findall(target["expr"])}
    assert not used & EXTRA_SCRAPE_METRICS


def test_scrape_timeout_setting_defaults_to_the_shipped_scrape_timeout(
    board: dict[str, Any],
) -> None:
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "scrape_timeout"]
    assert variable["type"] == "textbox"
    shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_timeout"]
    assert shipped.endswith("s")
    assert float(variable["query"]) == float(shipped.removesuffix("s"))
    assert variable["current"]["value"] == variable["query"]


def seconds(duration: str) -> float:
    """A Prometheus duration in whole seconds or minutes ("30s", "1m") as seconds."""
    match = re.fullmatch(r"(\d+)([sm])", duration)
    assert match, duration
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_scrape_timeout_setting_agrees_with_every_shipped_scrape_timeout(
    board: dict[str, Any],
) -> None:
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "scrape_timeout"]
    default = float(variable["query"])
    readme = (ROOT / "README.md").read_text()
    (readme_job,) = [
        job
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
        for job in yaml.safe_load(block).get("scrape_configs", [])
    ]
    monitor = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "servicemonitor.yaml").read_text())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert seconds(readme_job["scrape_timeout"]) == default
    assert seconds(endpoint["scrapeTimeout"]) == default
    docs = (ROOT / "docs" / "dashboards.md").read_text()
    assert re.search(
        rf"\*\*Scrape timeout \(s\)\*\* setting \(top of the dashboard, default {default:g},", docs
    )
    assert (
        f"default {default:g} s,"
        in by_title(board, "Scrape duration against the scrape timeout")["description"]
    )


def test_the_timeout_setting_can_be_saved_as_the_docs_say(board: dict[str, Any]) -> None:
    provisioning = ROOT / "dashboards" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ucdn-prefetch.yml").read_text())[
        "providers"
    ]
    docs = " ".join((ROOT / "docs" / "dashboards.md").read_text().split())
    assert "and save the dashboard" in docs
    # A provisioned dashboard refuses every save unless its provider allows UI updates.
    assert provider["allowUiUpdates"] is True
    assert "the shipped provisioning allows saving too (`allowUiUpdates: true`)" in docs


def test_the_data_source_interval_is_the_shipped_scrape_interval() -> None:
    (source,) = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    # $__rate_interval is four times this: it must be the interval Prometheus scrapes at.
    assert source["jsonData"]["timeInterval"] == shipped


def test_scrape_duration_panel_draws_the_timeout_setting_as_a_red_line(
    board: dict[str, Any],
) -> None:
    panel = by_title(board, "Scrape duration against the scrape timeout")
    (line,) = [t for t in panel["targets"] if "$scrape_timeout" in t["expr"]]
    assert line["expr"] == "vector($scrape_timeout)"
    (override,) = panel["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": line["legendFormat"]}
    properties = {prop["id"]: prop["value"] for prop in override["properties"]}
    assert properties["color"] == {"mode": "fixed", "fixedColor": "red"}
    assert properties["custom.lineStyle"]["fill"] == "dash"
    # The two measured series keep their own legends, so the override cannot repaint them.
    others = {t["legendFormat"] for t in panel["targets"] if t is not line}
    assert line["legendFormat"] not in others


def test_panels_prefer_the_recording_rules(board: dict[str, Any]) -> None:
    exprs = " ".join(target["expr"] for _, target in targets(board))
    unused = {name for name in recorded_names() if name not in exprs}
    # These two serve alerts only: the panels show their inputs in more detail.
    assert unused == {
        "project_id_platform:ucdn_prefetch_urls_finished:sum",
        "job:ucdn_api_request_errors_per_requests:ratio_rate5m",
        *BOARDS_ALERT_ONLY_RECORDS,
    }
    assert "histogram_quantile(" not in exprs
    assert "rate(" not in exprs


def test_per_target_queries_follow_the_variables(board: dict[str, Any]) -> None:
    per_target = [(title, target) for title, target in targets(board) if title not in EXPORTER_WIDE]
    assert per_target
    for title, target in per_target:
        assert 'project_id=~"$project_id"' in target["expr"], title
        if title not in PER_PROJECT:
            assert 'platform=~"$platform"' in target["expr"], title


def by_title(board: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [panel for panel in panels(board) if panel["title"] == title]
    return panel


def test_unfinished_urls_table_shows_progress_as_bar_gauges(board: dict[str, Any]) -> None:
    table = by_title(board, "Unfinished URLs")
    assert table["type"] == "table"
    assert table["targets"][0]["format"] == "table"
    (override,) = table["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": "Progress"}
    properties = {prop["id"]: prop["value"] for prop in override["properties"]}
    assert properties["custom.cellOptions"]["type"] == "gauge"
    assert (properties["unit"], properties["min"], properties["max"]) == ("percentunit", 0, 1)
    (organize,) = table["transformations"]
    assert list(organize["options"]["renameByName"].values()) == [
        "Project",
        "Platform",
        "Task",
        "URL",
        "Progress",
    ]


def test_heatmap_shows_the_exporter_buckets(board: dict[str, Any]) -> None:
    heatmap = by_title(board, "URL completion time distribution")
    (target,) = heatmap["targets"]
    assert "ucdn_prefetch_url_completion_seconds_bucket" in target["expr"]
    assert "sum by (le)" in target["expr"]
    assert target["format"] == "heatmap"
    assert heatmap["options"]["calculate"] is False


def test_thresholds_turn_red_where_the_alerts_fire(board: dict[str, Any]) -> None:
    def red_from(title: str) -> float:
        steps = by_title(board, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        (value,) = [step["value"] for step in steps if step["color"] == "red"]
        return float(value)

    assert red_from("Failure ratio of finished URLs") == alert_threshold(
        "UcdnPrefetchFailureRatioHigh"
    )
    assert red_from("Failure ratio over time") == alert_threshold("UcdnPrefetchFailureRatioHigh")
    assert red_from("Age of the oldest unfinished task") == alert_threshold("UcdnPrefetchTaskStuck")
    assert red_from("URL completion latency p50 / p90 / p99") == alert_threshold(
        "UcdnPrefetchCompletionSlow"
    )


def test_ratio_panels_use_percent_and_latency_panels_seconds(board: dict[str, Any]) -> None:
    def unit(title: str) -> str:
        return str(by_title(board, title)["fieldConfig"]["defaults"]["unit"])

    assert unit("Failure ratio of finished URLs") == "percentunit"
    assert unit("Failure ratio over time") == "percentunit"
    assert unit("URL completion latency p50 / p90 / p99") == "s"
    assert unit("Age of the oldest unfinished task") == "s"
    assert unit("Scrape duration against the scrape timeout") == "s"
