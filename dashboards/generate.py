"""Generate the Grafana overview dashboard for ucdn-prefetch-exporter.

The dashboard is built with grafana-foundation-sdk's typed builders and written to
dashboards/ucdn-prefetch-overview.json, which is committed so that users need neither
Python nor this script:

    python dashboards/generate.py          # rewrite the JSON
    python dashboards/generate.py --check  # exit 1 if the committed JSON is stale

The SDK has no model for the `__inputs`/`__requires` blocks of grafana.com-style import,
so `shareable` adds them to the built dict; everything else comes from the builders.
Every panel query goes through the `${datasource}` variable, so the same file works when
imported (the DS_PROMETHEUS input becomes the variable's default) and when provisioned
from disk (the variable falls back to the default data source).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "ucdn-prefetch-overview.json"
UID = "ucdn-prefetch-overview"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every per-target query is narrowed by the two dashboard variables.
TARGET = 'project_id=~"$project_id", platform=~"$platform"'
TARGET_LEGEND = "{{project_id}}/{{platform}}"
# Limits shared with prometheus/rules.yml, so that panels turn red where alerts fire.
TASK_AGE_LIMIT_SECONDS = 7200
FAILURE_RATIO_LIMIT = 0.1
P90_LIMIT_SECONDS = 3600
STATUS_COLORS = {
    "success": "green",
    "wait": "blue",
    "process": "yellow",
    "failure": "red",
    "unknown": "purple",
}

# Any of the SDK's panel builders: they repeat the same methods but share no base class.
Panel = Any


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


def fixed_color(color: str) -> list[model.DynamicConfigValue]:
    return [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def color_by_status(panel: Panel) -> Panel:
    """Same colour for a status on every panel; series are named by their status."""
    for status, color in STATUS_COLORS.items():
        panel = panel.override_by_name(status, fixed_color(color))
    return panel


def by_status(metric: str) -> str:
    return f"sum by (status) ({metric}{{{TARGET}}})"


def latest_value_stat(title: str) -> stat.Panel:
    """A stat panel, five rows high, of the latest value of its queries."""
    return (
        stat.Panel()
        .title(title)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(5)
    )


def status_stat(title: str, metric: str, description: str) -> Panel:
    panel = (
        latest_value_stat(title)
        .description(description)
        .with_target(query(by_status(metric), "{{status}}", instant=True))
        .unit("short")
        .decimals(0)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.FIXED))
        .span(8)
    )
    return color_by_status(panel)


def stacked_by_status(title: str, metric: str, description: str) -> Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .with_target(query(by_status(metric), "{{status}}"))
        .unit("short")
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


def now_row() -> Iterator[Panel]:
    """How many tasks and URLs are in each state, and how many finish badly."""
    yield status_stat(
        "Tasks by status",
        "ucdn_prefetch_tasks",
        "Prefetch tasks created in the exporter's lookback window (24 h by default), by "
        "status, summed over the selected targets. Many in wait or process for long: see "
        "the In flight row. Any unknown: the API returned a status the exporter does not "
        "know; see Invalid records.",
    )
    yield status_stat(
        "URLs by status",
        "ucdn_prefetch_urls",
        "URLs of those tasks, by status. A task holds many URLs, so this shows how much "
        "content is warm (success), still to warm (wait, process) or not warmed (failure).",
    )
    yield (
        latest_value_stat("Failure ratio of finished URLs")
        .description(
            "Per target: failed URLs / (succeeded + failed URLs) in the window, from the "
            "recording rule. Yellow from 5 %, red from 10 % (where the "
            "UcdnPrefetchFailureRatioHigh alert fires). When red: check the failing URLs "
            "are reachable from the CDN's origin and not returning errors there."
        )
        .with_target(
            query(
                f"project_id_platform:ucdn_prefetch_url_failures_per_finished:ratio{{{TARGET}}}",
                TARGET_LEGEND,
                instant=True,
            )
        )
        .unit("percentunit")
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
        "ucdn_prefetch_tasks",
        "The task counts above over time. The window slides: old tasks leave it after the "
        "lookback period, so a falling total is normal; a growing wait/process band is not.",
    )
    yield stacked_by_status(
        "URLs by status over time",
        "ucdn_prefetch_urls",
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
        .with_target(
            query(
                f"project_id_platform:ucdn_prefetch_url_failures_per_finished:ratio{{{TARGET}}}",
                TARGET_LEGEND,
            )
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(steps((None, "green"), (FAILURE_RATIO_LIMIT, "red")))
        .thresholds_style(
            common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        )
        .height(8)
        .span(8)
    )


def in_flight_row() -> Iterator[Panel]:
    """Which URLs are still warming, how far they got, and whether the list is complete."""
    progress = [
        model.DynamicConfigValue(id_val="unit", value="percentunit"),
        model.DynamicConfigValue(id_val="min", value=0),
        model.DynamicConfigValue(id_val="max", value=1),
        model.DynamicConfigValue(
            id_val="custom.cellOptions",
            value=common.TableBarGaugeCellOptions(mode=common.BarGaugeDisplayMode.BASIC),
        ),
        model.DynamicConfigValue(id_val="color", value={"mode": "continuous-RdYlGr"}),
    ]
    yield (
        latest_value_stat("URL series dropped by the cap")
        .description(
            "Unfinished URLs the exporter left out of the table because of its per-target "
            "cap (MAX_URL_SERIES). Above 0 the table is incomplete: raise the cap if "
            "Prometheus can take the series, or narrow the lookback window."
        )
        .with_target(
            query(f"sum(ucdn_prefetch_url_series_dropped{{{TARGET}}})", "dropped", instant=True)
        )
        .unit("short")
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
            "(recording rule). Empty when nothing is unfinished. Red at 2 h, where the "
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
        .unit("s")
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
            f"ucdn_prefetch_url_progress_ratio{{{TARGET}}}",
            {"url": "URL", "Value": "Progress"},
        )
        .override_by_name("Progress", progress)
        .sort_by([common_builder.TableSortByFieldState().display_name("Progress")])
        .height(10)
        .span(24)
    )


def speed_row() -> Iterator[Panel]:
    """How long URLs and tasks take from creation to finish."""
    quantile = (
        "project_id_platform_quantile:ucdn_prefetch_url_completion_seconds:histogram_quantile"
    )
    yield (
        timeseries.Panel()
        .title("URL completion latency p50 / p90 / p99")
        .description(
            "Time from task creation to finish of the URLs that succeeded in the window, as "
            "quantiles of the exporter's histogram (recording rules over the _bucket "
            "series). The red line is the p90 limit of UcdnPrefetchCompletionSlow (1 h). "
            "A rising p50 means everything is slower (CDN or origin load); a rising p99 "
            "alone means a few large or slow URLs."
        )
        .with_target(
            query(
                f'{quantile}{{{TARGET}, quantile=~"0.5|0.9|0.99"}}',
                "{{project_id}}/{{platform}} p{{quantile}}",
            )
        )
        .unit("s")
        .min(0)
        .thresholds(steps((None, "green"), (P90_LIMIT_SECONDS, "red")))
        .thresholds_style(
            common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        )
        .height(9)
        .span(12)
    )
    yield (
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
                "sum by (le) (ucdn_prefetch_url_completion_seconds_bucket"
                f'{{{TARGET}, status="success"}})',
                "{{le}}",
                fmt=PromQueryFormat.HEATMAP,
            )
        )
        # The exporter's buckets are already counted: show them, do not re-bucket.
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
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
    yield (
        task_table(
            "Slowest recent tasks",
            "Finished tasks of the window (the MAX_TASK_SERIES most recent per target) with "
            "the time from creation to their last URL's finish, slowest first. Use the task "
            "id to look a slow task up in the provider's console.",
            f"topk(20, ucdn_prefetch_task_completion_seconds{{{TARGET}}})",
            {"Value": "Completion time"},
        )
        .override_by_name(
            "Completion time",
            [
                model.DynamicConfigValue(id_val="unit", value="s"),
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
        .span(24)
    )


def health_row() -> Iterator[Panel]:
    """Whether the exporter itself works, and whether its numbers can be trusted."""
    yield (
        latest_value_stat("Collection up per target")
        .description(
            "Whether the exporter's last collection for each project and platform "
            "succeeded. DOWN means the UCDN API could not be read for it: the other panels "
            "show nothing for that target until it recovers. See the API requests panel "
            "for the kind of error and the exporter's log for details."
        )
        .with_target(query(f"ucdn_prefetch_up{{{TARGET}}}", TARGET_LEGEND, instant=True))
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
        .unit("none")
        .thresholds(steps((None, "red"), (1, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .span(12)
    )
    yield (
        latest_value_stat("Time since last successful collection")
        .description(
            "Seconds since each target was last collected successfully. It should stay "
            "near the scrape interval; a growing value with Collection up DOWN tells how "
            "long the data has been missing."
        )
        .with_target(
            query(
                f"time() - ucdn_prefetch_last_success_timestamp_seconds{{{TARGET}}}",
                TARGET_LEGEND,
                instant=True,
            )
        )
        .unit("s")
        # Five minutes is when UcdnPrefetchUpstreamDown starts to fire.
        .thresholds(steps((None, "green"), (300, "red")))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(12)
    )
    yield (
        timeseries.Panel()
        .title("API requests by outcome")
        .description(
            "Calls per second the exporter made to the UCDN API, by outcome (5-minute rate, "
            "recording rule; all targets together, this counter has no per-target labels). "
            "timeout or connection_error: network or gateway trouble; http_error: the "
            "gateway answered 4xx/5xx; api_error: a non-zero RetCode (keys, permissions, "
            "project id); invalid_response: an answer the exporter could not parse."
        )
        .with_target(query("job_outcome:ucdn_prefetch_api_requests:rate5m", "{{outcome}}"))
        .unit("reqps")
        .min(0)
        .fill_opacity(20)
        .stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
        .override_by_name("ok", fixed_color("green"))
        .height(8)
        .span(12)
    )
    yield (
        timeseries.Panel()
        .title("Scrape duration against the scrape timeout")
        .description(
            "How long each target's collection takes, how long Prometheus' whole scrape of "
            "the exporter takes, and the scrape timeout (needs Prometheus' "
            "--enable-feature=extra-scrape-metrics). When the scrape comes near the "
            "timeout, raise scrape_timeout, set CACHE_SECONDS, or split targets over "
            "several exporters."
        )
        .with_target(
            query(
                f"ucdn_prefetch_scrape_duration_seconds{{{TARGET}}}",
                "collection {{project_id}}/{{platform}}",
            )
        )
        .with_target(
            query(
                "scrape_duration_seconds and on (job, instance) ucdn_prefetch_exporter_build_info",
                "scrape {{instance}}",
                ref_id="B",
            )
        )
        .with_target(
            query(
                "scrape_timeout_seconds and on (job, instance) ucdn_prefetch_exporter_build_info",
                "timeout {{instance}}",
                ref_id="C",
            )
        )
        .override_by_regexp(
            "timeout .*",
            [
                *fixed_color("red"),
                model.DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
            ],
        )
        .unit("s")
        .min(0)
        .height(8)
        .span(12)
    )
    yield (
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
                f"sum by (reason) (ucdn_prefetch_records_invalid{{{TARGET}}})",
                "{{reason}}",
            )
        )
        .unit("short")
        .min(0)
        .height(8)
        .span(24)
    )


def variables() -> list[Any]:
    """Data source, then project and platform, each narrowing the next."""
    return [
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        # grafana.com import replaces this with the chosen data source; provisioned from
        # disk it matches nothing and Grafana selects the default Prometheus instead.
        .current(model.VariableOption(selected=True, text="Prometheus", value="${DS_PROMETHEUS}")),
        target_variable("project_id", "Project", "label_values(ucdn_prefetch_up, project_id)"),
        target_variable(
            "platform",
            "Platform",
            'label_values(ucdn_prefetch_up{project_id=~"$project_id"}, platform)',
        ),
    ]


def target_variable(name: str, label: str, definition: str) -> Any:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(definition)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        # A plain regex instead of the list of every value keeps queries short when an
        # account has many projects.
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


ROWS = (
    ("Now", now_row),
    ("In flight", in_flight_row),
    ("Speed", speed_row),
    ("Exporter health", health_row),
)


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, panels numbered in layout order."""
    builder = (
        dash.Dashboard("UCDN prefetch overview")
        .uid(UID)
        .description(
            "Prefetch (cache warm-up) tasks of UCDN gateways as seen by "
            "ucdn-prefetch-exporter: what is queued, what is warming, how fast, and "
            "whether the exporter can be trusted."
        )
        .tags(["ucdn", "cdn", "prefetch", "ucdn-prefetch-exporter"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .variables(variables())
    )
    panel_id = 0
    for title, row in ROWS:
        panel_id += 1
        builder = builder.with_row(dash.Row(title).id(panel_id))
        for panel in row():
            panel_id += 1
            builder = builder.with_panel(panel.id(panel_id).datasource(DATASOURCE))
    encoded: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return shareable(encoded)


def shareable(board: dict[str, Any]) -> dict[str, Any]:
    """Add what grafana.com-style import needs and the SDK has no model for."""
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "Prometheus that scrapes ucdn-prefetch-exporter",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.1.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *(
                {"type": "panel", "id": kind, "name": kind, "version": ""}
                for kind in sorted({p["type"] for p in board["panels"] if p["type"] != "row"})
            ),
        ],
        **board,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with the committed JSON instead of writing it; exit 1 if they differ",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    wanted = render()
    if not args.check:
        args.output.write_text(wanted)
        return 0
    current = args.output.read_text() if args.output.exists() else ""
    if current == wanted:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            str(args.output),
            "generated",
        )
    )
    print(f"{args.output} is stale: run python dashboards/generate.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
