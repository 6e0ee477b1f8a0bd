"""Row "Daily quotas": how much of each domain's daily prefetch and refresh quota is used,
whether prefetch is switched on, and whether these numbers are collected at all. The quota
series are per project (no platform label), so only the project variable narrows them."""

from __future__ import annotations

from collections.abc import Iterator

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from overview.common import (
    LIMITS,
    Panel,
    columns,
    latest_value_stat,
    percent,
    query,
    steps,
    up_down_stat,
)
from overview.tables import MERGE, table_query, value_column

TITLE = "Daily quotas"
PROJECT = 'project_id=~"$project_id"'
BY_QUOTA = "max by (project_id, domain, kind)"
# UcdnDomainQuotaNearlyUsed fires above this share of a daily quota.
QUOTA_USED_LIMIT: float = LIMITS["domainQuotaUsedRatio"]
USED = "Used"


def panels() -> Iterator[Panel]:
    """The quota table and the prefetch switches, then the collection's own state."""
    yield quota_table()
    yield prefetch_switch()
    yield collection_up()
    yield domains_dropped()


def quota_table() -> table.Panel:
    """Used, quota, remaining and used share per domain and quota kind, fullest first."""
    used = f"{BY_QUOTA} (ucdn_domain_quota_used{{{PROJECT}}})"
    quota = f"{BY_QUOTA} (ucdn_domain_quota{{{PROJECT}}})"
    return (
        table.Panel()
        .title("Daily quota used by domain")
        .description(
            "Per domain and quota kind (prefetch, refresh_file, refresh_dir): what was "
            "submitted today, the daily quota, what remains today (quota - used) and the "
            f"share used, fullest first. Red from {percent(QUOTA_USED_LIMIT)}, where "
            "UcdnDomainQuotaNearlyUsed "
            "fires; at 100 % the API refuses new tasks of that kind for the domain until "
            "the quota resets."
        )
        .with_target(table_query(used, "A"))
        .with_target(table_query(quota, "B"))
        .with_target(table_query(f"{quota} - {used}", "C"))
        .with_target(
            table_query(
                f"project_id_domain_kind:ucdn_domain_quota_used_per_quota:ratio{{{PROJECT}}}", "D"
            )
        )
        .with_transformation(MERGE)
        .with_transformation(
            columns(
                {
                    "project_id": "Project",
                    "domain": "Domain",
                    "kind": "Kind",
                    value_column("A"): "Used today",
                    value_column("B"): "Daily quota",
                    value_column("C"): "Remaining today",
                    value_column("D"): USED,
                }
            )
        )
        .override_by_name(
            USED,
            [
                model.DynamicConfigValue(id_val="unit", value=units.PercentUnit),
                model.DynamicConfigValue(id_val="min", value=0),
                model.DynamicConfigValue(id_val="max", value=1),
                model.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value=common.TableBarGaugeCellOptions(mode=common.BarGaugeDisplayMode.BASIC),
                ),
            ],
        )
        .unit(units.Short)
        .thresholds(steps((None, "green"), (QUOTA_USED_LIMIT, "red")))
        .sort_by([common_builder.TableSortByFieldState().display_name(USED).desc(True)])
        .cell_height(common.TableCellHeight.SM)
        .height(10)
        .span(16)
    )


def prefetch_switch() -> table.Panel:
    """ON or OFF per domain, switched-off domains first."""
    return (
        table.Panel()
        .title("Prefetch switch per domain")
        .description(
            "Whether prefetch is enabled on each domain. OFF on a domain that still gets "
            "prefetch tasks is UcdnDomainPrefetchDisabled: the tasks warm nothing."
        )
        .with_target(
            query(
                f"max by (project_id, domain) (ucdn_domain_prefetch_enabled{{{PROJECT}}})",
                instant=True,
                fmt=PromQueryFormat.TABLE,
            )
        )
        .with_transformation(
            columns({"project_id": "Project", "domain": "Domain", "Value": "Prefetch"})
        )
        .mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="OFF", color="red", index=0),
                        "1": model.ValueMappingResult(text="ON", color="green", index=1),
                    }
                )
            ]
        )
        .override_by_name(
            "Prefetch",
            [model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"})],
        )
        # A state, not a quantity: the value mappings above name it.
        .unit(units.NoUnit)
        .sort_by([common_builder.TableSortByFieldState().display_name("Prefetch")])
        .cell_height(common.TableCellHeight.SM)
        .height(10)
        .span(8)
    )


def collection_up() -> stat.Panel:
    """UP or DOWN per project for the quota collection."""
    return up_down_stat(
        "Quota collection up per project",
        (
            "Whether the exporter's last reading of the domains, quotas and prefetch "
            "switches of each project succeeded (three API actions per project). DOWN for "
            "15 minutes is UcdnDomainQuotaCollectionDown."
        ),
        query(f"ucdn_domain_quota_up{{{PROJECT}}}", "{{project_id}}", instant=True),
    ).span(12)


def domains_dropped() -> stat.Panel:
    """Domains left out of the quota series by the exporter's cap."""
    return (
        latest_value_stat("Domains dropped from the quota panels")
        .description(
            "Domains of the selected projects the exporter left out of the quota and "
            "prefetch switch series because of its per-project domain cap. Above 0 the "
            "table is incomplete."
        )
        .with_target(
            query(f"sum(ucdn_domain_quota_domains_dropped{{{PROJECT}}})", "dropped", instant=True)
        )
        .unit(units.Short)
        .decimals(0)
        .thresholds(steps((None, "green"), (1, "orange")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(12)
    )
