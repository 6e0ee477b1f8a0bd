"""Background collection, in process against the simulator on loopback: a scrape calls
nothing, publishes each target's last good figures with their age, ``up 0`` and no
figures once they are older than the staleness bound; the quota sweeps follow the
planner's tick and stretch their interval under a tight budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.core import Metric
from pydantic import SecretStr
from simdata import domains

from exporter.collection.kinds import TaskKind
from exporter.collection.quota_sweep import QuotaSweeper
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.metrics import API_PACE, FIGURES_AGE, QUOTA_FAMILIES
from exporter.publish.collector import BackgroundOptions, UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset, generate_tasks
from exporter.summary.target_summary import SummaryLimits

TARGETS = [Target("web", "cdn"), Target("web", "dcdn")]
STALENESS = 60.0
WAIT_SECONDS = 10.0


class WallClock:
    """Unix time, moved on by the test: the age of figures without the wait."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def world(
    simulator: Callable[..., SimulatedApi],
) -> Iterator[tuple[SimulatedApi, UcdnCollector, WallClock]]:
    now = int(time.time())
    before = set(threading.enumerate())
    api = simulator(
        StaticDataset(
            {
                ("web", False): generate_tasks(12, 2, now=now, seed=1),
                ("web", True): generate_tasks(4, 2, now=now, seed=2),
            },
            domains={"web": domains("web", "a.example.com")},
        )
    )
    client = ApiClient(
        api.url,
        DEMO_PUBLIC_KEY,
        SecretStr(DEMO_PRIVATE_KEY),
        options=ClientOptions(max_requests_per_second=50),
    )
    wall = WallClock()
    sweeper = QuotaSweeper(client, ["web"], interval=300, max_sweeps=1)
    collector = UcdnCollector(
        client,
        TARGETS,
        kinds=[TaskKind.named("prefetch", SummaryLimits())],
        wall_clock=wall,
        extra=[sweeper],
        background=BackgroundOptions(max_staleness=STALENESS, max_threads=2, collection_seconds=5),
    )
    yield api, collector, wall
    collector.close()
    client.close()
    # A sweep that the close cut short logs its end: here, not into a later test's log.
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("quota-sweep-"):
            thread.join(WAIT_SECONDS)


def scrape(collector: UcdnCollector) -> dict[str, Metric]:
    return {metric.name: metric for metric in collector.collect_within(Deadline.after(5))}


def values(metric: Metric) -> dict[tuple[str, ...], float]:
    return {tuple(sample.labels.values()): sample.value for sample in metric.samples}


def wait_until(ready: Callable[[], bool]) -> None:
    give_up = time.monotonic() + WAIT_SECONDS
    while not ready():
        assert time.monotonic() < give_up, "not within the wait"
        time.sleep(0.01)


def collected(collector: UcdnCollector) -> bool:
    planner = collector.planner
    assert planner is not None
    states = [planner.state((target, collector.kinds[0])) for target in TARGETS]
    return all(state is not None and state.good is not None for state in states)


def test_a_scrape_calls_nothing_and_publishes_the_figures_with_their_age(
    world: tuple[SimulatedApi, UcdnCollector, WallClock],
) -> None:
    api, collector, _ = world
    before = scrape(collector)  # not started: nothing collected yet
    assert set(values(before["ucdn_prefetch_up"]).values()) == {0}
    assert not before["ucdn_prefetch_tasks"].samples
    assert not before[FIGURES_AGE.name].samples
    assert api.request_count() == 0
    collector.start()
    wait_until(lambda: collected(collector))
    wait_until(lambda: bool(scrape(collector)[QUOTA_FAMILIES.quota.name].samples))
    requests = api.request_count()
    metrics = scrape(collector)
    assert api.request_count() == requests  # the scrape itself called nothing
    assert values(metrics["ucdn_prefetch_up"]) == {("web", "cdn"): 1, ("web", "dcdn"): 1}
    tasks = values(metrics["ucdn_prefetch_tasks"])
    assert sum(v for labels, v in tasks.items() if labels[:2] == ("web", "cdn")) == 12
    ages = values(metrics[FIGURES_AGE.name])
    assert set(ages) == {("web", "cdn", "prefetch"), ("web", "dcdn", "prefetch")}
    assert all(0 <= age < WAIT_SECONDS for age in ages.values())
    assert values(metrics[API_PACE.name]) == {("default",): 50}


def test_a_probe_reads_the_planners_figures_of_its_target_alone(
    world: tuple[SimulatedApi, UcdnCollector, WallClock],
) -> None:
    api, collector, _ = world
    collector.start()
    wait_until(lambda: collected(collector))
    requests = api.request_count()
    metrics = {m.name: m for m in collector.collect_probe(Deadline.after(5), TARGETS[1])}
    assert api.request_count() == requests
    assert values(metrics["ucdn_prefetch_up"]) == {("web", "dcdn"): 1}
    assert set(values(metrics[FIGURES_AGE.name])) == {("web", "dcdn", "prefetch")}


def test_figures_past_the_staleness_bound_publish_up_0_and_nothing_else(
    world: tuple[SimulatedApi, UcdnCollector, WallClock],
) -> None:
    _, collector, wall = world
    collector.start()
    wait_until(lambda: collected(collector))
    fresh = scrape(collector)
    wall.offset = STALENESS + 1  # no refresh within the test: the planner's clock is real
    stale = scrape(collector)
    assert set(values(stale["ucdn_prefetch_up"]).values()) == {0}
    assert not stale["ucdn_prefetch_tasks"].samples
    assert not stale["ucdn_prefetch_urls"].samples
    # What shows how old the last good figures are stays.
    assert values(stale["ucdn_prefetch_last_success_timestamp_seconds"]) == values(
        fresh["ucdn_prefetch_last_success_timestamp_seconds"]
    )
    assert all(age > STALENESS for age in values(stale[FIGURES_AGE.name]).values())


def test_a_tight_budget_stretches_the_quota_sweeps_interval() -> None:
    sweeper = QuotaSweeper(object(), [f"p{i}" for i in range(500)], interval=300, max_sweeps=1)  # type: ignore[arg-type]
    try:
        assert sweeper.interval_for(0) == 300  # no limit: as configured
        assert sweeper.interval_for(1000) == 300  # a wide budget: as configured
        # 500 projects, three calls each before a sweep has counted their domains, within
        # 2 requests a second.
        assert sweeper.interval_for(2) == pytest.approx(500 * 3 / 2)
    finally:
        sweeper.close()


class NoDomains:
    """A quota client whose projects have no domains: a sweep is one call."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.lock = threading.Lock()

    def list_domains(self, project_id: str, *, deadline: Deadline, limit: int) -> Any:
        with self.lock:
            self.listed.append(project_id)
        return SimpleNamespace(domains=(), total=0)

    def domain_quota(self, project_id: str, domain_id: str, *, deadline: Deadline) -> Any:
        raise AssertionError("no domain to ask about")

    def prefetch_enabled(self, project_id: str, domain_id: str, *, deadline: Deadline) -> bool:
        raise AssertionError("no domain to ask about")


def test_sweeps_start_no_faster_than_their_budget_pays_for_their_calls() -> None:
    now = [0.0]
    client = NoDomains()
    sweeper = QuotaSweeper(
        client, ["p1", "p2", "p3"], interval=300, max_sweeps=2, clock=lambda: now[0]
    )
    try:
        sweeper.tick(1.0)  # one start: its three reckoned calls take the budget 3 s
        sweeper.tick(1.0)
        wait_until(lambda: len(client.listed) == 1)
        now[0] = 2.9
        sweeper.tick(1.0)
        time.sleep(0.05)
        assert client.listed == ["p1"]
        now[0] = 3.0
        sweeper.tick(1.0)
        wait_until(lambda: len(client.listed) == 2)
        assert client.listed == ["p1", "p2"]
        sweeper.tick(0)  # no limit: as many as may run at once
        wait_until(lambda: len(client.listed) == 3)
        assert client.listed == ["p1", "p2", "p3"]
    finally:
        sweeper.close()
