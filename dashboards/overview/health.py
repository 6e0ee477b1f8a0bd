"""Row "Exporter health": whether the exporter itself works, and whether its numbers can be
trusted."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model

from exporter.metrics import BUILD_INFO, PREFETCH_FAMILIES
from overview.common import (
    TARGET,
    TARGET_LEGEND,
    Panel,
    fixed_color,
    latest_value_stat,
    query,
    steps,
    up_down_stat,
)
from overview.variables import SCRAPE_TIMEOUT, SCRAPE_TIMEOUT_DEFAULT_SECONDS

TITLE = "Exporter health"
# Five minutes without a success is when UcdnPrefetchUpstreamDown starts to fire.
STALE_AFTER_SECONDS = 300
TIMEOUT_LEGEND = "scrape timeout (setting)"


def panels() -> Iterator[Panel]:
    """Per-target state and staleness, then the exporter's API calls, timing and anomalies."""
    yield collection_up()
    yield time_since_success()
    yield api_requests()
    yield scrape_duration()
    yield requests_per_collection()
    yield invalid_records()


def collection_up() -> stat.Panel:
    """UP or DOWN per target."""
    return up_down_stat(
        "Collection up per target",
        (
            "Whether the exporter's last collection for each project and platform "
            "succeeded. DOWN means the UCDN API could not be read for it: the other panels "
            "show nothing for that target until it recovers. See the API requests panel "
            "for the kind of error and the exporter's log for details."
        ),
        query(f"{PREFETCH_FAMILIES.up.name}{{{TARGET}}}", TARGET_LEGEND, instant=True),
    ).span(12)


def time_since_success() -> stat.Panel:
    """Seconds since each target's last successful collection."""
    return (
        latest_value_stat("Time since last successful collection")
        .description(
            "Seconds since each target was last collected successfully. It should stay "
            "near the scrape interval; a growing value with Collection up DOWN tells how "
            "long the data has been missing."
        )
        .with_target(
            query(
                f"time() - {PREFETCH_FAMILIES.last_success.name}{{{TARGET}}}",
                TARGET_LEGEND,
                instant=True,
            )
        )
        .unit(units.Seconds)
        .thresholds(steps((None, "green"), (STALE_AFTER_SECONDS, "red")))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(12)
    )


def api_requests() -> timeseries.Panel:
    """API calls per second by outcome, stacked, for the whole exporter."""
    return (
        timeseries.Panel()
        .title("API requests by outcome")
        .description(
            "Calls per second the exporter made to the UCDN API, by outcome (5-minute rate, "
            "recording rule; all targets and API actions together, this counter has no "
            "per-target labels). "
            "timeout or connection_error: network or gateway trouble; http_error: the "
            "gateway answered 4xx/5xx; api_error: a non-zero RetCode (keys, permissions, "
            "project id); invalid_response: an answer the exporter could not parse; "
            "rate_limited: the gateway's rate limit (RetCode 153), see "
            "MAX_API_REQUESTS_PER_SECOND."
        )
        .with_target(
            query("sum by (outcome) (job_action_outcome:ucdn_api_requests:rate5m)", "{{outcome}}")
        )
        .unit(units.RequestsPerSecond)
        .min(0)
        .fill_opacity(20)
        .stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
        .override_by_name("ok", fixed_color("green"))
        .height(8)
        .span(12)
    )


def scrape_duration() -> timeseries.Panel:
    """Each collection and the whole scrape, against the scrape timeout the user set."""
    return (
        timeseries.Panel()
        .title("Scrape duration against the scrape timeout")
        .description(
            "How long each target's collection takes and how long Prometheus' whole scrape "
            "of the exporter takes, against the red dashed line of the dashboard's Scrape "
            f"timeout setting (default {SCRAPE_TIMEOUT_DEFAULT_SECONDS} s, the scrape_timeout "
            "of the shipped prometheus/prometheus.yml): set it to your job's scrape_timeout "
            "and save the dashboard. The exporter "
            "gives up at that timeout minus SCRAPE_TIMEOUT_OFFSET_SECONDS. When the scrape "
            "comes near the line, raise scrape_timeout, set CACHE_SECONDS, or split targets "
            "over several exporters."
        )
        .with_target(
            query(
                f"{PREFETCH_FAMILIES.scrape_duration.name}{{{TARGET}}}",
                "collection {{project_id}}/{{platform}}",
            )
        )
        .with_target(
            query(
                f"scrape_duration_seconds and on (job, instance) {BUILD_INFO.name}",
                "scrape {{instance}}",
                ref_id="B",
            )
        )
        # Stock Prometheus has no series of the timeout (scrape_timeout_seconds needs
        # --enable-feature=extra-scrape-metrics), so the line is the dashboard's setting.
        .with_target(query(f"vector(${SCRAPE_TIMEOUT})", TIMEOUT_LEGEND, ref_id="C"))
        .override_by_name(
            TIMEOUT_LEGEND,
            [
                *fixed_color("red"),
                model.DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
            ],
        )
        .unit(units.Seconds)
        .min(0)
        .height(8)
        .span(12)
    )


def requests_per_collection() -> timeseries.Panel:
    """What each target's last collection cost in API calls, full sync or incremental."""
    return (
        timeseries.Panel()
        .title("API requests per collection")
        .description(
            "API requests the collection behind each target's figures made, and whether it "
            "was a full sync of the window (every RESYNC_SECONDS) or an incremental one "
            "(the new tasks and the unfinished ones by TaskId). Between full syncs a target "
            "should cost a few requests whatever its window holds; an incremental line as "
            "high as the full one means many unfinished tasks (TASK_LOOKUP_BATCH), and a "
            "full line on every scrape means the target falls back to full syncs (tasks "
            "without a TaskId, or RESYNC_SECONDS=0)."
        )
        .with_target(
            query(
                f"{PREFETCH_FAMILIES.collection_requests.name}{{{TARGET}}}",
                "{{project_id}}/{{platform}} {{sync}}",
            )
        )
        .unit(units.Short)
        .min(0)
        .height(8)
        .span(12)
    )


def invalid_records() -> timeseries.Panel:
    """Anomalies the exporter corrected, by reason."""
    return (
        timeseries.Panel()
        .title("Invalid records by reason")
        .description(
            "Anomalies the exporter found and corrected in the last collection, by reason "
            "(unknown status, finish before create, progress out of range, duplicate task "
            "or URL, TotalCount mismatch). A few are normal for this API; a sudden rise "
            "means the gateway changed what it returns: compare with the raw API answer."
        )
        .with_target(
            query(
                f"sum by (reason) ({PREFETCH_FAMILIES.records_invalid.name}{{{TARGET}}})",
                "{{reason}}",
            )
        )
        .unit(units.Short)
        .min(0)
        .height(8)
        .span(12)
    )
