"""Every series once: the probes carry their targets' series, ``/exporter-metrics`` the rest.

The probe setup runs one Prometheus job per target against ``/probe`` and one job per
replica against ``/exporter-metrics``. A process-wide series in a probe answer would be
scraped once per target (and, behind several replicas, jump between their counters),
so the test takes the union over every probe target and ``/exporter-metrics`` and asserts
it has no series twice and is exactly ``/metrics``' set. The WSGI application is called
in process with an environ dict, as client_python's own tests do; the collector talks
real HTTP to the simulator on loopback.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from faultkit import CANARY, NOW, PUBLIC_KEY
from prometheus_client.gc_collector import GCCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from pydantic import SecretStr
from simdata import domains
from simfaults import SimulatedApi

from exporter.collection.kinds import TaskKind
from exporter.collection.quota_sweep import QuotaSweeper
from exporter.collection.sync import SyncOptions
from exporter.gateway.answers import ACTIONS
from exporter.gateway.api_client import ApiClient
from exporter.gateway.outcomes import OUTCOMES
from exporter.gateway.transport import ClientOptions
from exporter.metrics import (
    API_REQUESTS,
    KIND_FAMILIES,
    PROCESS_FAMILIES,
    PROJECT_INFO,
    QUOTA_FAMILIES,
    TASK_KINDS,
)
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.static import StaticDataset, generate_tasks
from exporter.summary.target_summary import SummaryLimits
from exporter.web.app import ExporterApp

TARGETS = [Target("org-a", "cdn"), Target("org-a", "dcdn"), Target("org-b", "cdn")]
Series = tuple[str, frozenset[tuple[str, str]]]
# A project's own series: its quotas and its ucdn_project_info.
QUOTA_NAMES = {
    name for family in (*QUOTA_FAMILIES.all(), PROJECT_INFO) for name in family.sample_names
}
QUOTA_OWNERS = {Target("org-a", "cdn"), Target("org-b", "cdn")}
PROCESS_WIDE = tuple(name for family in PROCESS_FAMILIES for name in family.sample_names)


@pytest.fixture(scope="module")
def app() -> Iterator[ExporterApp]:
    dataset = StaticDataset(
        {
            ("org-a", False): generate_tasks(8, 3, now=NOW, seed=1),
            ("org-a", True): generate_tasks(5, 2, now=NOW, seed=2),
            ("org-b", False): generate_tasks(3, 4, now=NOW, seed=3),
        },
        refresh_tasks={("org-a", True): generate_tasks(2, 2, now=NOW, seed=4)},
        domains={
            "org-a": domains("org-a", "a.example.com", "b.example.com"),
            "org-b": domains("org-b", "c.example.com"),
        },
    )
    api = SimulatedApi(PUBLIC_KEY, CANARY, dataset).start()
    client = ApiClient(api.url, PUBLIC_KEY, SecretStr(CANARY), options=ClientOptions())
    # Every kind, and the quotas: a probe carries both kinds' series of its target, and the
    # first target of a project in platform order carries the project's quota series.
    kinds = [TaskKind.named(kind, SummaryLimits()) for kind in TASK_KINDS]
    sweeper = QuotaSweeper(client, ["org-a", "org-b"], interval=300)
    # Every collection a full sync: the series of /metrics and of the probes, taken one
    # after the other, are then the same (an incremental one says sync="incremental").
    collector = UcdnCollector(
        client,
        TARGETS,
        kinds=kinds,
        sync=SyncOptions(resync_seconds=0),
        default_timeout=10.0,
        extra=[sweeper],
    )
    runtime = CollectorRegistry()  # what cli.serve() hands the application
    ProcessCollector(registry=runtime)
    PlatformCollector(registry=runtime)
    GCCollector(registry=runtime)
    try:
        yield ExporterApp(collector, runtime=runtime)
    finally:
        collector.close()
        client.close()
        api.stop()


def get(app: ExporterApp, path: str, query: str = "") -> tuple[str, str]:
    """The status line and body of a GET, through the WSGI interface."""
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)

    body = b"".join(app(environ, start_response))
    return status[0], body.decode()


def series(app: ExporterApp, path: str, query: str = "") -> list[Series]:
    """Every series of an answer, in order; a repeated one appears twice."""
    status, body = get(app, path, query)
    assert status == "200 OK", body
    return [
        (sample.name, frozenset(sample.labels.items()))
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    ]


def probe(app: ExporterApp, target: Target) -> list[Series]:
    query = urlencode({"project_id": target.project_label, "platform": target.platform})
    return series(app, "/probe", query)


def test_probes_and_exporter_metrics_together_have_every_series_of_metrics_exactly_once(
    app: ExporterApp,
) -> None:
    everything = series(app, "/metrics")
    assert len(set(everything)) == len(everything)
    split = [series(app, "/exporter-metrics")]
    split.extend(probe(app, target) for target in TARGETS)
    counts = Counter(one for answer in split for one in answer)
    assert [s for s, n in counts.items() if n > 1] == []
    assert set(counts) == set(everything)


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_a_probe_carries_only_its_own_targets_series(app: ExporterApp, target: Target) -> None:
    answer = probe(app, target)
    assert answer, "an empty probe answer proves nothing"
    own = {("project_id", target.project_label), ("platform", target.platform)}
    project_only = [(name, labels) for name, labels in answer if name in QUOTA_NAMES]
    strays = [(name, dict(labels)) for name, labels in answer if not own <= labels]
    assert strays == [(name, dict(labels)) for name, labels in project_only]
    # The project's own series go with its first target in platform order only.
    assert bool(project_only) == (target in QUOTA_OWNERS)
    assert all(("project_id", target.project_label) in labels for _, labels in project_only)
    names = {name for name, _ in answer}
    assert names.isdisjoint(PROCESS_WIDE)
    assert not any(name.startswith(("process_", "python_")) for name in names)
    assert {KIND_FAMILIES[kind].up.name for kind in TASK_KINDS} <= names


def test_exporter_metrics_carries_only_the_process_series_and_calls_no_api(
    app: ExporterApp,
) -> None:
    before = api_requests(app, "/metrics")
    answer = series(app, "/exporter-metrics")
    assert all("project_id" not in dict(labels) for _, labels in answer)
    names = {name for name, _ in answer}
    assert set(PROCESS_WIDE) <= names
    assert any(name.startswith("process_") for name in names)
    assert any(name.startswith("python_") for name in names)
    # Its counter is the process' own and the same one /metrics shows: no request was made.
    assert api_requests(app, "/exporter-metrics") == before


def api_requests(app: ExporterApp, path: str) -> dict[tuple[str, str], float]:
    """``ucdn_api_requests_total`` by action and outcome, as ``path`` shows it."""
    _, body = get(app, path)
    counts = {
        (sample.labels["action"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name in API_REQUESTS.sample_names
    }
    assert len(counts) == len(ACTIONS) * len(OUTCOMES)  # every pair, from the start
    return counts


def test_the_landing_page_links_the_exporter_metrics(app: ExporterApp) -> None:
    status, page = get(app, "/")
    assert status == "200 OK"
    assert '<a href="exporter-metrics">' in page
