"""Builders and constants every row shares.

The limits shared with the alerts are read from the monitoring mixin's ``_config``
(mixin/config.libsonnet), the one place the alerts take them from too, so that panels turn
red where the alerts fire (tests/shipped/test_dashboards.py and test_board_limits.py compare
the generated JSON with prometheus/rules.yml).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import _jsonnet
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every per-target query is narrowed by the two dashboard variables.
TARGET = 'project_id=~"$project_id", platform=~"$platform"'
TARGET_LEGEND = "{{project_id}}/{{platform}}"
MIXIN_CONFIG = Path(__file__).resolve().parents[2] / "mixin" / "config.libsonnet"


def alert_limits() -> dict[str, Any]:
    """The mixin's ``_config``: the alerts' thresholds by name (and their job selector)."""
    config = _jsonnet.evaluate_snippet(str(MIXIN_CONFIG), "(import 'config.libsonnet')._config")
    limits: dict[str, Any] = json.loads(config)
    return limits


LIMITS = alert_limits()
TASK_AGE_LIMIT_SECONDS: float = LIMITS["prefetchTaskAgeSeconds"]
FAILURE_RATIO_LIMIT: float = LIMITS["prefetchFailureRatio"]
P90_LIMIT_SECONDS: float = LIMITS["prefetchP90Seconds"]


def percent(ratio: float) -> str:
    """A limit as the panel descriptions write it: 0.2 -> "20 %"."""
    return f"{ratio * 100:g} %"


def hours_or_minutes(seconds: float) -> str:
    """A limit as the panel descriptions write it: 7200 -> "2 h", 600 -> "10 minutes"."""
    return f"{seconds / 3600:g} h" if seconds % 3600 == 0 else f"{seconds / 60:g} minutes"


STATUS_COLORS = {
    "success": "green",
    "wait": "blue",
    "process": "yellow",
    "failure": "red",
    "unknown": "purple",
}

# The SDK's panel builders repeat the same methods but share no base class beyond
# Builder[model.Panel], which has only build(): the union names the kinds this dashboard
# uses, so that id(), datasource() and override_by_name() stay type-checked.
Panel = stat.Panel | timeseries.Panel | table.Panel | heatmap.Panel
StatusPanel = TypeVar("StatusPanel", stat.Panel, timeseries.Panel)


def query(
    expr: str,
    legend: str = "__auto",
    *,
    instant: bool = False,
    fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES,
    ref_id: str = "A",
) -> prometheus.Dataquery:
    """A Prometheus query through the dashboard's data source variable."""
    built = (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .format(fmt)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )
    return built.instant() if instant else built.range()


def steps(*pairs: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first pair's value must be None (the base colour)."""
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in pairs])
    )


def threshold_line() -> common_builder.GraphThresholdsStyleConfig:
    """Draw a time series panel's thresholds as lines across the graph."""
    return common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)


def fixed_color(color: str) -> list[model.DynamicConfigValue]:
    """Override properties that paint a field in one named colour."""
    return [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def color_by_status(panel: StatusPanel) -> StatusPanel:
    """Same colour for a status on every panel; series are named by their status."""
    for status, color in STATUS_COLORS.items():
        panel = panel.override_by_name(status, fixed_color(color))
    return panel


def by_status(metric: str) -> str:
    """The selected targets' series of a metric, summed per status."""
    return f"sum by (status) ({metric}{{{TARGET}}})"


def latest_value_stat(title: str) -> stat.Panel:
    """A stat panel, five rows high, of the latest value of its queries."""
    return (
        stat.Panel()
        .title(title)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(5)
    )


def up_down_stat(title: str, description: str, target: prometheus.Dataquery) -> stat.Panel:
    """A latest-value stat of a 1/0 health series, shown as UP (green) or DOWN (red)."""
    return (
        latest_value_stat(title)
        .description(description)
        .with_target(target)
        .mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="DOWN", color="red", index=0),
                        "1": model.ValueMappingResult(text="UP", color="green", index=1),
                    }
                )
            ]
        )
        # A state, not a quantity: the value mappings above name it.
        .unit(units.NoUnit)
        .thresholds(steps((None, "red"), (1, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    )


def status_stat(title: str, metric: str, description: str) -> stat.Panel:
    """One coloured number per status, a third of the row wide."""
    panel = (
        latest_value_stat(title)
        .description(description)
        .with_target(query(by_status(metric), "{{status}}", instant=True))
        .unit(units.Short)
        .decimals(0)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.FIXED))
        .span(8)
    )
    return color_by_status(panel)


def stacked_by_status(title: str, metric: str, description: str) -> timeseries.Panel:
    """A metric over time, stacked by status, a third of the row wide."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .with_target(query(by_status(metric), "{{status}}"))
        .unit(units.Short)
        .min(0)
        .fill_opacity(30)
        .stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
        .height(8)
        .span(8)
    )
    return color_by_status(panel)


def columns(names: dict[str, str]) -> model.DataTransformerConfig:
    """Keep, order and rename a table's columns: label name (or Value) -> header."""
    return model.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
            "indexByName": {name: index for index, name in enumerate(names)},
            "renameByName": names,
        },
    )


def task_table(
    title: str, description: str, expr: str, columns_after_task: dict[str, str]
) -> table.Panel:
    """A compact table of an instant query's series, one row per task (and what follows)."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .with_target(query(expr, instant=True, fmt=PromQueryFormat.TABLE))
        .with_transformation(
            columns(
                {
                    "project_id": "Project",
                    "platform": "Platform",
                    "task_id": "Task",
                    **columns_after_task,
                }
            )
        )
        .cell_height(common.TableCellHeight.SM)
    )
