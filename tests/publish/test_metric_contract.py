"""The live exposition is exactly the metric contract of exporter/metrics.py, and the
defaults written in the settings are the ones every other part uses.

A collector scrapes the simulator over real HTTP on loopback; its OpenMetrics exposition
(the format that keeps a gauge histogram's type) is
parsed back and compared family by family with the contract: names, types, label names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from pydantic import SecretStr
from simdata import domains

from exporter.collection.catalogue import Account, Catalogue
from exporter.collection.discovery import AccountProjects
from exporter.collection.kinds import TaskKind
from exporter.collection.quota_sweep import QuotaSweeper
from exporter.collection.sync import SyncOptions
from exporter.gateway.answers import PREFETCH_ACTION, REFRESH_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.metrics import (
    ALL_FAMILIES,
    API_REQUESTS,
    DISCOVERY_FAMILIES,
    KIND_FAMILIES,
    PREFETCH_FAMILIES,
    PROCESS_FAMILIES,
    PROJECT_INFO,
    TASK_KINDS,
    Family,
)
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.config import setting_default
from exporter.settings.target import Target
from exporter.simulator.account import Project
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset, generate_tasks
from exporter.summary.target_summary import SummaryLimits
from exporter.web.app import ScrapeTimeouts

NOW = 1_790_000_000
TARGETS = [Target("web", "cdn"), Target("web", "dcdn")]


@pytest.fixture
def collector(simulator: Callable[..., SimulatedApi]) -> Iterator[UcdnCollector]:
    dataset = StaticDataset(
        {
            ("web", False): generate_tasks(30, 4, now=NOW, seed=7),
            ("web", True): generate_tasks(10, 2, now=NOW, seed=8),
        },
        refresh_tasks={("web", False): generate_tasks(5, 2, now=NOW, seed=9)},
        domains={"web": domains("web", "a.example.com", "b.example.com")},
    )
    # Its projects discovered, so that the discovery families have samples too.
    api = SimulatedApi(
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        dataset,
        clock=lambda: NOW,
        projects=[Project("web", "Web")],
    ).start()
    client = ApiClient(
        api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions()
    )
    kinds = [TaskKind.named(name, SummaryLimits(max_url_series=5)) for name in TASK_KINDS]
    account = Account(AccountProjects("main", client, None), ("cdn", "dcdn"), client)
    catalogue = Catalogue([account], kinds=TASK_KINDS)
    sweeper = QuotaSweeper(client, [], interval=300)
    collector = UcdnCollector(catalogue, kinds=kinds, wall_clock=lambda: NOW, extra=[sweeper])
    yield collector
    collector.close()
    client.close()
    api.stop()


def scraped(collector: UcdnCollector) -> dict[str, tuple[str, list[Sample]]]:
    """The OpenMetrics exposition, parsed strictly: family name -> (type, samples)."""
    text = generate_latest(MetricsSnapshot(collector.collect_within(Deadline.after(20))))
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text.decode())}


def own_label_names(family: Family, sample: Sample) -> set[str]:
    names = set(sample.labels)
    if family.type == "gaugehistogram" and sample.name.endswith("_bucket"):
        names.discard("le")  # the histogram's own label, not the contract's
    return names


def test_the_exposition_has_exactly_the_contracts_families(
    collector: UcdnCollector,
) -> None:
    families = scraped(collector)
    # The text parser names a counter without its _total.
    assert set(families) == {family.name for family in ALL_FAMILIES}
    for family in ALL_FAMILIES:
        kind, samples = families[family.name]
        assert kind == family.type, family.name
        for sample in samples:
            assert sample.name in family.sample_names, sample.name
            assert own_label_names(family, sample) == set(family.label_names), sample


def test_the_label_check_saw_every_family(collector: UcdnCollector) -> None:
    families = scraped(collector)
    for family in ALL_FAMILIES:
        assert families[family.name][1], f"{family.name}: the dataset gave it no sample"


def test_a_registry_describes_without_calling_the_api(collector: UcdnCollector) -> None:
    registry = CollectorRegistry()
    before = collector_requests(collector)
    registry.register(collector)
    assert collector_requests(collector) == before
    text = generate_latest(registry).decode()
    assert {f.name for f in text_string_to_metric_families(text)} == {
        family.name for family in ALL_FAMILIES
    }
    assert collector_requests(collector) > before


def collector_requests(collector: UcdnCollector) -> int:
    return sum(
        int(sample.value)
        for metric in collector.exporter_metrics()
        if metric.name == API_REQUESTS.name
        for sample in metric.samples
    )


def test_a_probe_has_only_the_per_target_families(collector: UcdnCollector) -> None:
    metrics = collector.collect_targets(Deadline.after(20), TARGETS[:1])
    assert [m.name for m in metrics] == [
        family.name for kind in TASK_KINDS for family in KIND_FAMILIES[kind].all()
    ]
    assert [m.name for m in collector.exporter_metrics()] == [
        family.name for family in (*PROCESS_FAMILIES, *DISCOVERY_FAMILIES.all())
    ]


def test_the_contract_names_every_family_once() -> None:
    names = [family.name for family in ALL_FAMILIES]
    assert len(names) == len(set(names))
    assert all(family.per_target for kind in KIND_FAMILIES.values() for family in kind.all())
    assert all(
        family.name.startswith(f"ucdn_{kind}_")
        for kind in TASK_KINDS
        for family in KIND_FAMILIES[kind].all()
    )
    assert not any(family.per_target for family in PROCESS_FAMILIES)
    assert not any(family.per_target for family in DISCOVERY_FAMILIES.all())
    assert not PROJECT_INFO.per_target


def test_a_family_refuses_to_be_built_as_another_type() -> None:
    # The collector adds samples through the contract's type: a mismatch is a bug, loudly.
    with pytest.raises(TypeError, match="gaugehistogram"):
        PREFETCH_FAMILIES.url_completion.new(GaugeMetricFamily)


def test_scrape_timeouts_default_to_the_settings_defaults() -> None:
    timeouts = ScrapeTimeouts()
    assert timeouts.offset == setting_default("scrape_timeout_offset_seconds")
    assert timeouts.maximum == setting_default("max_scrape_timeout_seconds")
    assert timeouts.maximum > 0


def test_the_collectors_defaults_are_the_settings_defaults() -> None:
    parameters = inspect.signature(UcdnCollector).parameters
    sync = SyncOptions()
    assert sync.lookback_seconds == setting_default("lookback_seconds")
    assert sync.resync_seconds == setting_default("resync_seconds")
    assert sync.overlap_seconds == setting_default("overlap_seconds")
    assert sync.lookup_batch == setting_default("task_lookup_batch")
    assert sync.stuck_horizon_seconds == setting_default("stuck_horizon_seconds")
    assert parameters["cache_seconds"].default == setting_default("cache_seconds")
    assert parameters["default_timeout"].default == setting_default("max_scrape_timeout_seconds")


def test_a_task_kind_names_its_action_families_and_limits() -> None:
    limits = SummaryLimits(buckets=(1.0, 5.0))
    refresh = TaskKind.named("refresh", limits)
    assert (refresh.action, refresh.families.up.name) == (REFRESH_ACTION, "ucdn_refresh_up")
    assert refresh.limits is limits
    prefetch = TaskKind.named("prefetch", SummaryLimits())
    assert (prefetch.action, prefetch.families.up.name) == (PREFETCH_ACTION, "ucdn_prefetch_up")


@pytest.mark.parametrize(
    "arguments",
    [
        {"kinds": []},
        {"kinds": [TaskKind.named("refresh", SummaryLimits())], "limits": SummaryLimits()},
    ],
)
def test_a_collector_refuses_no_kinds_or_limits_beside_kinds(arguments: dict[str, Any]) -> None:
    client = ApiClient("http://127.0.0.1:9", "p", SecretStr("k"))  # never called
    try:
        with pytest.raises(ValueError, match="kinds"):
            UcdnCollector(client, TARGETS, **arguments)
    finally:
        client.close()
