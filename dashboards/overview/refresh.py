"""Row "Refresh": the refresh (purge) tasks, shaped like the prefetch rows above it:
tasks and URLs by status, what is unfinished and for how long, latency, and collection."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common, units

from overview.common import (
    LIMITS,
    TARGET,
    TARGET_LEGEND,
    Panel,
    fixed_color,
    hours_or_minutes,
    latest_value_stat,
    query,
    status_stat,
    steps,
    up_down_stat,
)

TITLE = "Refresh"
PREFIX = "ucdn_refresh_"
# Where UcdnRefreshTaskStuck fires: a refresh takes minutes at most.
REFRESH_AGE_LIMIT_SECONDS: float = LIMITS["refreshTaskAgeSeconds"]
QUANTILE = "project_id_platform_quantile:ucdn_refresh_url_completion_seconds:histogram_quantile"
REFRESH_ACTION = "DescribeNewUcdnRefreshCacheTask"


def panels() -> Iterator[Panel]:
    """Counts by status, then age and latency, then whether the numbers can be trusted."""
    yield status_stat(
        "Refresh tasks by status",
        PREFIX + "tasks",
        "Refresh (purge) tasks created in the lookback window, by status. wait and process "
        "are still purging; failure tasks left old content on some edge nodes.",
    )
    yield status_stat(
        "Refresh URLs by status",
        PREFIX + "urls",
        "URLs and directories of those refresh tasks, by status. The domain tables below "
        "say which domains the failures belong to.",
    )
    yield unfinished_urls()
    yield latency_quantiles()
    yield oldest_unfinished_age()
    yield collection_up()
    yield api_requests()
    yield invalid_records()


def unfinished_urls() -> stat.Panel:
    """URLs still waiting or being purged."""
    return (
        latest_value_stat("Unfinished refresh URLs")
        .description(
            "Refresh URLs in wait or process, all selected targets together. Old content "
            "may still be served for these until they finish."
        )
        .with_target(
            query(
                f'sum({PREFIX}urls{{{TARGET}, status=~"wait|process"}})',
                "unfinished",
                instant=True,
            )
        )
        .unit(units.Short)
        .decimals(0)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(8)
    )


def latency_quantiles() -> timeseries.Panel:
    """p50/p90/p99 of successful refresh URLs per target."""
    return (
        timeseries.Panel()
        .title("Refresh URL completion latency p50 / p90 / p99")
        .description(
            "Time from refresh task creation to finish of the URLs that succeeded in the "
            "window, as quantiles of the exporter's histogram (buckets 1 s to 1 h; "
            "recording rules over the _bucket series). A refresh normally takes seconds "
            "to minutes: a p90 in tens of minutes means the provider's purge queue is slow."
        )
        .with_target(
            query(
                f'{QUANTILE}{{{TARGET}, quantile=~"0.5|0.9|0.99"}}',
                "{{project_id}}/{{platform}} p{{quantile}}",
            )
        )
        .unit(units.Seconds)
        .min(0)
        .height(8)
        .span(12)
    )


def oldest_unfinished_age() -> stat.Panel:
    """Age of the oldest refresh task still in wait or process."""
    return (
        latest_value_stat("Age of the oldest unfinished refresh task")
        .description(
            "How long ago the oldest refresh task still in wait or process was created, per "
            "target (recording rule). Empty when nothing is unfinished. Red at "
            f"{hours_or_minutes(REFRESH_AGE_LIMIT_SECONDS)}, where UcdnRefreshTaskStuck fires."
        )
        .with_target(
            query(
                "project_id_platform:ucdn_refresh_oldest_unfinished_task_age_seconds:max"
                f"{{{TARGET}}}",
                TARGET_LEGEND,
                instant=True,
            )
        )
        .unit(units.Seconds)
        .thresholds(
            steps(
                (None, "green"),
                (REFRESH_AGE_LIMIT_SECONDS / 2, "yellow"),
                (REFRESH_AGE_LIMIT_SECONDS, "red"),
            )
        )
        .no_value("nothing unfinished")
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(8)
        .span(6)
    )


def collection_up() -> stat.Panel:
    """UP or DOWN per target for the refresh collection."""
    return (
        up_down_stat(
            "Refresh collection up per target",
            (
                "Whether the exporter's last collection of refresh tasks for each project and "
                "platform succeeded. DOWN: this row shows nothing for that target until it "
                "recovers; the panel beside it says which kind of API error."
            ),
            query(f"{PREFIX}up{{{TARGET}}}", TARGET_LEGEND, instant=True),
        )
        .height(8)
        .span(6)
    )


def api_requests() -> timeseries.Panel:
    """Calls per second of the refresh task action, by outcome."""
    return (
        timeseries.Panel()
        .title("Refresh API requests by outcome")
        .description(
            f"Calls per second of {REFRESH_ACTION}, the action that lists refresh tasks, by "
            "outcome (5-minute rate, recording rule; all targets together). Anything but "
            "ok is explained on the API requests panel of the Exporter health row."
        )
        .with_target(
            query(
                "sum by (outcome) (job_action_outcome:ucdn_api_requests:rate5m"
                f'{{action="{REFRESH_ACTION}"}})',
                "{{outcome}}",
            )
        )
        .unit(units.RequestsPerSecond)
        .min(0)
        .override_by_name("ok", fixed_color("green"))
        .height(8)
        .span(12)
    )


def invalid_records() -> timeseries.Panel:
    """Anomalies of the refresh answers the exporter corrected, by reason."""
    return (
        timeseries.Panel()
        .title("Invalid refresh records by reason")
        .description(
            "Anomalies the exporter found and corrected in the last refresh collection, by "
            "reason, as for prefetch on the Exporter health row. A sudden rise means the "
            "gateway changed what it returns."
        )
        .with_target(query(f"sum by (reason) ({PREFIX}records_invalid{{{TARGET}}})", "{{reason}}"))
        .unit(units.Short)
        .min(0)
        .height(8)
        .span(12)
    )
