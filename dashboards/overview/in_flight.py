"""Row "In flight": which URLs are still warming, how far they got, and whether the list
is complete."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model

from exporter.metrics import PREFETCH_FAMILIES
from overview.common import (
    TARGET,
    TARGET_LEGEND,
    TASK_AGE_LIMIT_SECONDS,
    Panel,
    hours_or_minutes,
    latest_value_stat,
    query,
    steps,
    task_table,
)

TITLE = "In flight"
# The Progress column: a 0-100 % bar from red to green.
PROGRESS = [
    model.DynamicConfigValue(id_val="unit", value=units.PercentUnit),
    model.DynamicConfigValue(id_val="min", value=0),
    model.DynamicConfigValue(id_val="max", value=1),
    model.DynamicConfigValue(
        id_val="custom.cellOptions",
        value=common.TableBarGaugeCellOptions(mode=common.BarGaugeDisplayMode.BASIC),
    ),
    model.DynamicConfigValue(id_val="color", value={"mode": "continuous-RdYlGr"}),
]


def panels() -> Iterator[Panel]:
    """Whether the table is complete and how old its oldest task is, then the table."""
    yield (
        latest_value_stat("URL series dropped by the cap")
        .description(
            "Unfinished URLs the exporter left out of the table because of its per-target "
            "cap (MAX_URL_SERIES). Above 0 the table is incomplete: raise the cap if "
            "Prometheus can take the series, or narrow the lookback window."
        )
        .with_target(
            query(
                f"sum({PREFETCH_FAMILIES.url_series_dropped.name}{{{TARGET}}})",
                "dropped",
                instant=True,
            )
        )
        .unit(units.Short)
        .decimals(0)
        .thresholds(steps((None, "green"), (1, "orange")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(12)
    )
    yield (
        latest_value_stat("Age of the oldest unfinished task")
        .description(
            "How long ago the oldest task still in wait or process was created, per target "
            "(recording rule). Empty when nothing is unfinished. Red at "
            f"{hours_or_minutes(TASK_AGE_LIMIT_SECONDS)}, where the "
            "UcdnPrefetchTaskStuck alert fires: look the task up in the table and at the "
            "provider's console."
        )
        .with_target(
            query(
                "project_id_platform:ucdn_prefetch_oldest_unfinished_task_age_seconds:max"
                f"{{{TARGET}}}",
                TARGET_LEGEND,
                instant=True,
            )
        )
        .unit(units.Seconds)
        .thresholds(
            steps(
                (None, "green"),
                (TASK_AGE_LIMIT_SECONDS / 2, "yellow"),
                (TASK_AGE_LIMIT_SECONDS, "red"),
            )
        )
        .no_value("nothing unfinished")
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(12)
    )
    yield (
        task_table(
            "Unfinished URLs",
            "Every URL in wait or process, newest tasks first as the exporter keeps them, "
            "with its progress. URLs stuck at 0 % for long point at the origin (slow or "
            "unreachable); compare with the age of the oldest unfinished task above. The "
            "exporter keeps at most MAX_URL_SERIES URLs per target: check URL series "
            "dropped before concluding a URL is missing.",
            f"{PREFETCH_FAMILIES.url_progress.name}{{{TARGET}}}",
            {"url": "URL", "Value": "Progress"},
        )
        .override_by_name("Progress", PROGRESS)
        .sort_by([common_builder.TableSortByFieldState().display_name("Progress")])
        .height(10)
        .span(24)
    )
