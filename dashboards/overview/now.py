"""Row "Now": how many tasks and URLs are in each state, and how many finish badly."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import common, units

from exporter.metrics import PREFETCH_FAMILIES
from overview.common import (
    FAILURE_RATIO_LIMIT,
    TARGET,
    TARGET_LEGEND,
    Panel,
    latest_value_stat,
    percent,
    query,
    stacked_by_status,
    status_stat,
    steps,
    threshold_line,
)

TITLE = "Now"
FAILURE_RATIO = f"project_id_platform:ucdn_prefetch_url_failures_per_finished:ratio{{{TARGET}}}"


def panels() -> Iterator[Panel]:
    """Counts by status as numbers, then the same over time, each with the failure ratio."""
    yield status_stat(
        "Tasks by status",
        PREFETCH_FAMILIES.tasks.name,
        "Prefetch tasks created in the exporter's lookback window (24 h by default), by "
        "status, summed over the selected targets. Many in wait or process for long: see "
        "the In flight row. Any unknown: the API returned a status the exporter does not "
        "know; see Invalid records.",
    )
    yield status_stat(
        "URLs by status",
        PREFETCH_FAMILIES.urls.name,
        "URLs of those tasks, by status. A task holds many URLs, so this shows how much "
        "content is warm (success), still to warm (wait, process) or not warmed (failure).",
    )
    yield (
        latest_value_stat("Failure ratio of finished URLs")
        .description(
            "Per target: failed URLs / (succeeded + failed URLs) in the window, from the "
            f"recording rule. Yellow from 5 %, red from {percent(FAILURE_RATIO_LIMIT)} (where the "
            "UcdnPrefetchFailureRatioHigh alert fires). When red: check the failing URLs "
            "are reachable from the CDN's origin and not returning errors there."
        )
        .with_target(query(FAILURE_RATIO, TARGET_LEGEND, instant=True))
        .unit(units.PercentUnit)
        .decimals(1)
        .min(0)
        .max(1)
        .thresholds(steps((None, "green"), (0.05, "yellow"), (FAILURE_RATIO_LIMIT, "red")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .span(8)
    )
    yield stacked_by_status(
        "Tasks by status over time",
        PREFETCH_FAMILIES.tasks.name,
        "The task counts above over time. The window slides: old tasks leave it after the "
        "lookback period, so a falling total is normal; a growing wait/process band is not.",
    )
    yield stacked_by_status(
        "URLs by status over time",
        PREFETCH_FAMILIES.urls.name,
        "URL counts over time. Watch wait and process shrink into success after a big "
        "prefetch; a failure band that grows means URLs are failing now.",
    )
    yield (
        timeseries.Panel()
        .title("Failure ratio over time")
        .description(
            "The failure ratio per target over time, with the alert limit as a red "
            "threshold line. A step up right after a new batch of tasks usually means a "
            "batch of bad URLs (typos, removed files) rather than a CDN problem."
        )
        .with_target(query(FAILURE_RATIO, TARGET_LEGEND))
        .unit(units.PercentUnit)
        .min(0)
        .max(1)
        .thresholds(steps((None, "green"), (FAILURE_RATIO_LIMIT, "red")))
        .thresholds_style(threshold_line())
        .height(8)
        .span(8)
    )
