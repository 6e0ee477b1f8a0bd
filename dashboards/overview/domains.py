"""Row "Domains": URLs of each domain by status and its failure ratio, worst first, one
table per kind (prefetch, refresh)."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model

from overview.common import LIMITS, STATUS_COLORS, TARGET, Panel, columns, percent, steps
from overview.tables import MERGE, table_query, value_column

TITLE = "Domains"
# UcdnDomainFailureRatioHigh's floor: the ratio column turns red there.
DOMAIN_FAILURE_RATIO_LIMIT: float = LIMITS["domainFailureRatio"]
FAILURE_RATIO = "Failure ratio"
KINDS = {"prefetch": "Prefetch", "refresh": "Refresh"}
STATUS_REF_IDS = dict(zip(STATUS_COLORS, "ABCDE", strict=True))
RATIO_REF_ID = "F"


def panels() -> Iterator[Panel]:
    """The prefetch table, then the refresh one."""
    for kind in KINDS:
        yield domain_table(kind)


def domain_urls(kind: str, status: str) -> str:
    """The selected targets' URLs of one kind and status, per project and domain."""
    return f'sum by (project_id, domain) (ucdn_{kind}_domain_urls{{{TARGET}, status=~"{status}"}})'


def domain_table(kind: str) -> table.Panel:
    """One row per project and domain: URLs by status and failure / finished."""
    panel = (
        table.Panel()
        .title(f"{KINDS[kind]} URLs by domain")
        .description(
            f"{KINDS[kind]} URLs of the lookback window per domain and status (platforms "
            "summed), and the share of finished URLs that failed, failure / (success + "
            f"failure), worst first. Red from {percent(DOMAIN_FAILURE_RATIO_LIMIT)}, where "
            "UcdnDomainFailureRatioHigh starts to look (it also needs "
            f"{LIMITS['domainFailureRatioOverProject']:g} times the project's ratio and "
            f"{LIMITS['minFinishedUrls']} finished URLs). "
            "_other gathers the domains beyond the exporter's per-target domain cap."
        )
        .cell_height(common.TableCellHeight.SM)
        .height(9)
        .span(12)
    )
    for status, ref_id in STATUS_REF_IDS.items():
        panel = panel.with_target(table_query(domain_urls(kind, status), ref_id))
    ratio = f"{domain_urls(kind, 'failure')} / ({domain_urls(kind, 'success|failure')} > 0)"
    return (
        panel.with_target(table_query(ratio, RATIO_REF_ID))
        .with_transformation(MERGE)
        .with_transformation(
            columns(
                {
                    "project_id": "Project",
                    "domain": "Domain",
                    **{value_column(ref): status for status, ref in STATUS_REF_IDS.items()},
                    value_column(RATIO_REF_ID): FAILURE_RATIO,
                }
            )
        )
        .override_by_name(
            FAILURE_RATIO,
            [
                model.DynamicConfigValue(id_val="unit", value=units.PercentUnit),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .thresholds(steps((None, "green"), (DOMAIN_FAILURE_RATIO_LIMIT, "red")))
        .sort_by([common_builder.TableSortByFieldState().display_name(FAILURE_RATIO).desc(True)])
    )
