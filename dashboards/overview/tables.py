"""What the tables that join several instant queries share.

Each query of such a table is an instant query in table format; Grafana names its value
column "Value #<ref id>", and the merge transformation joins the queries' rows on their
labels (one row per project and domain, for example) before columns() renames them.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from overview.common import query

MERGE = model.DataTransformerConfig(id_val="merge", options={})


def table_query(expr: str, ref_id: str) -> prometheus.Dataquery:
    """One of the joined queries: instant, in table format."""
    return query(expr, instant=True, fmt=PromQueryFormat.TABLE, ref_id=ref_id)


def value_column(ref_id: str) -> str:
    """The name Grafana gives the value column of the query ``ref_id``."""
    return f"Value #{ref_id}"
