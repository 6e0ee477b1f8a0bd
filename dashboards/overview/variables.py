"""The dashboard's template variables: data source, then project and platform, each
narrowing the next, then the scrape timeout the scrape duration panel draws."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as model

from exporter.metrics import PREFETCH_FAMILIES
from overview.common import DATASOURCE

Variable = cogbuilder.Builder[model.VariableModel]
SCRAPE_TIMEOUT = "scrape_timeout"
# The scrape_timeout of prometheus/prometheus.yml and of the README's scrape config (a test
# keeps them equal).
SCRAPE_TIMEOUT_DEFAULT_SECONDS = 30


def variables() -> list[Variable]:
    """The variables in the order Grafana shows them."""
    return [
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        # grafana.com import replaces this with the chosen data source; provisioned from
        # disk it matches nothing and Grafana selects the default Prometheus instead.
        .current(model.VariableOption(selected=True, text="Prometheus", value="${DS_PROMETHEUS}")),
        target_variable(
            "project_id", "Project", f"label_values({PREFETCH_FAMILIES.up.name}, project_id)"
        ),
        target_variable(
            "platform",
            "Platform",
            f'label_values({PREFETCH_FAMILIES.up.name}{{project_id=~"$project_id"}}, platform)',
        ),
        scrape_timeout_variable(),
    ]


def target_variable(name: str, label: str, definition: str) -> dash.QueryVariable:
    """A multi-value target label variable whose "All" is a plain regex."""
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


def scrape_timeout_variable() -> dash.TextBoxVariable:
    """The job's scrape_timeout in seconds, which stock Prometheus keeps no series of."""
    default = str(SCRAPE_TIMEOUT_DEFAULT_SECONDS)
    return (
        dash.TextBoxVariable(SCRAPE_TIMEOUT)
        .label("Scrape timeout (s)")
        .description(
            "The scrape_timeout of the Prometheus job that scrapes the exporter, in "
            "seconds: drawn as the limit on the scrape duration panel."
        )
        .default_value(default)
        .current(model.VariableOption(selected=True, text=default, value=default))
    )
