"""Row "Speed": how long URLs and tasks take from creation to finish."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import heatmap, table, timeseries
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from exporter.metrics import PREFETCH_FAMILIES
from overview.common import (
    P90_LIMIT_SECONDS,
    TARGET,
    Panel,
    color_by_status,
    hours_or_minutes,
    query,
    steps,
    task_table,
    threshold_line,
)

TITLE = "Speed"
QUANTILE = "project_id_platform_quantile:ucdn_prefetch_url_completion_seconds:histogram_quantile"
FINISHED_RATE = "project_id_platform_status:ucdn_prefetch_urls_finished:rate5m"


def panels() -> Iterator[Panel]:
    """URL latency quantiles and their distribution, then the throughput and the slowest tasks."""
    yield latency_quantiles()
    yield completion_heatmap()
    yield finished_per_minute()
    yield slowest_tasks()


def latency_quantiles() -> timeseries.Panel:
    """p50/p90/p99 per target, with the p90 alert limit drawn."""
    return (
        timeseries.Panel()
        .title("URL completion latency p50 / p90 / p99")
        .description(
            "Time from task creation to finish of the URLs that succeeded in the window, as "
            "quantiles of the exporter's histogram (recording rules over the _bucket "
            "series). The red line is the p90 limit of UcdnPrefetchCompletionSlow "
            f"({hours_or_minutes(P90_LIMIT_SECONDS)}). "
            "A rising p50 means everything is slower (CDN or origin load); a rising p99 "
            "alone means a few large or slow URLs."
        )
        .with_target(
            query(
                f'{QUANTILE}{{{TARGET}, quantile=~"0.5|0.9|0.99"}}',
                "{{project_id}}/{{platform}} p{{quantile}}",
            )
        )
        .unit(units.Seconds)
        .min(0)
        .thresholds(steps((None, "green"), (P90_LIMIT_SECONDS, "red")))
        .thresholds_style(threshold_line())
        .height(9)
        .span(12)
    )


def completion_heatmap() -> heatmap.Panel:
    """The exporter's latency buckets of successful URLs over time."""
    return (
        heatmap.Panel()
        .title("URL completion time distribution")
        .description(
            "How many successful URLs of the window finished within each latency bucket "
            "(10 s to 4 h), over time; darker cells hold more URLs. A band moving up means "
            "URLs get slower; two bands mean two populations (for example small pages and "
            "large downloads)."
        )
        .with_target(
            query(
                f"sum by (le) ({PREFETCH_FAMILIES.url_completion.name}_bucket"
                f'{{{TARGET}, status="success"}})',
                "{{le}}",
                fmt=PromQueryFormat.HEATMAP,
            )
        )
        # The exporter's buckets are already counted: show them, do not re-bucket.
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(units.Seconds))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .exponent(0.5)
            .steps(64)
        )
        .show_tooltip()
        .cell_gap(1)
        .height(9)
        .span(12)
    )


def finished_per_minute() -> timeseries.Panel:
    """Throughput: URLs that finished per minute, by status, from the exporter's counters."""
    return (
        color_by_status(
            timeseries.Panel()
            .title("URLs finished per minute")
            .description(
                "How many URLs the exporter saw succeed or fail per minute (5-minute rate of "
                f"{PREFETCH_FAMILIES.urls_finished.name}_total, recording rule), all selected "
                "targets stacked. Unlike the window's counts this is a counter: it does not fall "
                "as old tasks leave the window, and a restart does not read as a drop. A flat line "
                "while URLs wait means prefetching has stalled; a red band means the origin or "
                "the CDN is refusing URLs."
            )
            .with_target(query(f"sum by (status) ({FINISHED_RATE}{{{TARGET}}}) * 60", "{{status}}"))
            .unit("urls/min")
            .min(0)
            .fill_opacity(20)
            .stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
        )
        .height(9)
        .span(12)
    )


def slowest_tasks() -> table.Panel:
    """The 20 slowest finished tasks, coloured against the p90 limit."""
    return (
        task_table(
            "Slowest recent tasks",
            "Finished tasks of the window (the MAX_TASK_SERIES most recent per target) with "
            "the time from creation to their last URL's finish, slowest first. Use the task "
            "id to look a slow task up in the provider's console.",
            f"topk(20, {PREFETCH_FAMILIES.task_completion.name}{{{TARGET}}})",
            {"Value": "Completion time"},
        )
        .override_by_name(
            "Completion time",
            [
                model.DynamicConfigValue(id_val="unit", value=units.Seconds),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .thresholds(
            steps((None, "green"), (P90_LIMIT_SECONDS / 2, "yellow"), (P90_LIMIT_SECONDS, "red"))
        )
        .sort_by(
            [common_builder.TableSortByFieldState().display_name("Completion time").desc(True)]
        )
        .height(9)
        .span(12)
    )
