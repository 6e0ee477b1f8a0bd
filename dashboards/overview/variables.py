"""The dashboard's template variables: data source, then project (shown by its name where
it has one) and platform, each narrowing the next, then the scrape timeout the scrape
duration panel draws."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as model

from exporter.metrics import PREFETCH_FAMILIES
from overview.common import DATASOURCE

Variable = cogbuilder.Builder[model.VariableModel]
PROJECT_INFO = "ucdn_project_info"
# One series per project, project_id and project_name: the name from the project's info
# series where it has one, else the ID itself (a listed project has no name, and a target
# scraped from an exporter without the info series has no info at all).
PROJECT_NAMES = (
    f'max by (project_id, project_name) ({PROJECT_INFO}{{project_name!=""}}) '
    "or on (project_id) label_replace(max by (project_id) "
    f"({PROJECT_INFO} or {PREFETCH_FAMILIES.up.name}), "
    '"project_name", "$1", "project_id", "(.*)")'
)
# Grafana shows each query_result() line as {project_id="…",project_name="…"} value time
# (labels in Prometheus' order): the ID is the option's value, the name its text.
PROJECT_NAME_REGEX = '/project_id="(?<value>[^"]*)",project_name="(?<text>[^"]*)"/'
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
        target_variable("project_id", "Project", f"query_result({PROJECT_NAMES})").regex(
            PROJECT_NAME_REGEX
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
