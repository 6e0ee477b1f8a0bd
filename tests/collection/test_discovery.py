"""Project discovery, the catalogue and its shards, against simulated gateways on loopback.

Each gateway is the simulator (signatures checked, tasks from a static dataset) with an
account of declared projects, which the test adds and removes while the collector runs and
whose ``GetProjectList`` it can have IAM refuse. The discovery's clock is the test's: a
rediscovery is due when the test says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.collection.catalogue import Account, Catalogue, shard_of
from exporter.collection.discovery import AccountProjects
from exporter.gateway.answers import PREFETCH_ACTION, PROJECTS_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.account import Project
from exporter.simulator.static import StaticDataset, generate_tasks

NOW = 1_790_000_000
# The projects that have tasks, whether the account lists them or not.
PROJECTS_WITH_TASKS = ("org-alpha", "org-beta", "org-gamma", "org-shared", "web")
INTERVAL = 60.0
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class World:
    """Gateways, their clients, and the clock of the discoveries."""

    def __init__(self) -> None:
        self.now = 0.0
        self.apis: list[SimulatedApi] = []
        self.clients: list[ApiClient] = []
        self.collectors: list[UcdnCollector] = []

    def gateway(self, keys: tuple[str, str], projects: dict[str, str]) -> ApiClient:
        """A simulator whose account has ``projects`` (ID -> name; the first is its default)."""
        dataset = StaticDataset(
            {
                (pid, False): generate_tasks(3, 1, now=NOW, seed=len(pid))
                for pid in PROJECTS_WITH_TASKS
            }
        )
        api = SimulatedApi(
            *keys,
            dataset,
            clock=lambda: NOW,
            projects=[Project(pid, name) for pid, name in projects.items()],
        ).start()
        self.apis.append(api)
        client = ApiClient(api.url, keys[0], SecretStr(keys[1]), options=ClientOptions())
        self.clients.append(client)
        return client

    def account(self, name: str, client: ApiClient, project_filter: str | None = None) -> Account:
        pattern = re.compile(project_filter) if project_filter else None
        projects = AccountProjects(
            name,
            client,
            None,
            project_filter=pattern,
            interval=INTERVAL,
            clock=lambda: self.now,
            wall_clock=lambda: NOW,
        )
        return Account(projects, ("cdn",), client)

    def collector(self, *accounts: Account, shard: int = 0, total: int = 1) -> UcdnCollector:
        catalogue = Catalogue(accounts, shard=shard, total_shards=total)
        collector = UcdnCollector(catalogue, wall_clock=lambda: NOW)
        self.collectors.append(collector)
        return collector


@pytest.fixture
def world() -> Iterator[World]:
    made = World()
    yield made
    for collector in made.collectors:
        collector.close()
    for client in made.clients:
        client.close()
    for api in made.apis:
        api.stop()


KEYS_A = ("public-a", "private-a")
KEYS_B = ("public-b", "private-b")


def scrape(collector: UcdnCollector) -> Series:
    text = generate_latest(MetricsSnapshot(collector.collect_within(Deadline.after(10))))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name != "ucdn_prefetch_scrape_duration_seconds"
    }


def up_targets(series: Series) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["project_id"], dict(labels)["platform"]): value
        for (name, labels), value in series.items()
        if name == "ucdn_prefetch_up"
    }


def value_of(collector: UcdnCollector, name: str, **labels: str) -> float | None:
    text = generate_latest(MetricsSnapshot(collector.exporter_metrics())).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def infos(series: Series) -> set[tuple[str, str, str]]:
    return {
        (dict(labels)["account"], dict(labels)["project_id"], dict(labels)["project_name"])
        for (name, labels), value in series.items()
        if name == "ucdn_project_info" and value == 1
    }


def test_rediscovery_follows_a_project_added_and_one_removed_without_a_restart(
    world: World,
) -> None:
    client = world.gateway(KEYS_A, {"org-alpha": "Alpha", "org-beta": "Beta"})
    collector = world.collector(world.account("main", client))
    first = scrape(collector)
    assert set(up_targets(first)) == {("org-alpha", "cdn"), ("org-beta", "cdn")}
    assert infos(first) == {("main", "org-alpha", "Alpha"), ("main", "org-beta", "Beta")}
    api = world.apis[0]
    api.remove_project("org-beta")
    api.add_project("org-gamma", "Gamma <&>")
    assert set(up_targets(scrape(collector))) == {("org-alpha", "cdn"), ("org-beta", "cdn")}
    world.now += INTERVAL  # the next discovery is due
    api.reset_log()
    after = scrape(collector)
    assert set(up_targets(after)) == {("org-alpha", "cdn"), ("org-gamma", "cdn")}
    assert not any(dict(labels).get("project_id") == "org-beta" for _, labels in after)
    assert set(up_targets(after).values()) == {1}
    assert infos(after) == {("main", "org-alpha", "Alpha"), ("main", "org-gamma", "Gamma <&>")}
    asked = {r.params.get("ProjectId") for r in api.requests if r.action == PREFETCH_ACTION}
    assert asked == {"org-alpha", "org-gamma"}
    assert api.requests_by_action()[PROJECTS_ACTION] == 1
    assert value_of(collector, "ucdn_project_discovery_projects", account="main") == 2
    assert value_of(collector, "ucdn_project_discovery_success", account="main") == 1


def test_a_discovery_is_not_repeated_before_its_interval(world: World) -> None:
    client = world.gateway(KEYS_A, {"org-alpha": "Alpha"})
    collector = world.collector(world.account("main", client))
    for _ in range(3):
        scrape(collector)
        world.now += INTERVAL / 4
    assert world.apis[0].requests_by_action()[PROJECTS_ACTION] == 1


def test_the_filter_keeps_projects_whose_id_or_name_it_finds(world: World) -> None:
    projects = {"org-alpha": "Alpha", "org-beta": "shop-beta", "org-gamma": "Gamma"}
    client = world.gateway(KEYS_A, projects)
    collector = world.collector(world.account("main", client, project_filter="alpha|^shop-"))
    assert set(up_targets(scrape(collector))) == {("org-alpha", "cdn"), ("org-beta", "cdn")}


def test_an_iam_refusal_keeps_the_last_good_list_and_says_so_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    client = world.gateway(KEYS_A, {"org-alpha": "Alpha"})
    collector = world.collector(world.account("main", client))
    scrape(collector)
    world.apis[0].refuse_project_list = True
    world.now += INTERVAL
    with caplog.at_level(logging.WARNING, logger="exporter.collection.discovery"):
        series = scrape(collector)
    assert up_targets(series) == {("org-alpha", "cdn"): 1}
    [line] = [r for r in caplog.records if r.name == "exporter.collection.discovery"]
    fields = line.__dict__["fields"]
    assert line.getMessage() == "project discovery failed"
    assert fields["detail"].startswith("RetCode 299")
    assert "IAM denied GetProjectList" in fields["hint"]
    assert value_of(collector, "ucdn_project_discovery_success", account="main") == 0
    assert value_of(collector, "ucdn_project_discovery_failures_total", account="main") == 1
    last = value_of(
        collector, "ucdn_project_discovery_last_success_timestamp_seconds", account="main"
    )
    assert last == NOW


def test_a_first_discovery_that_fails_leaves_the_account_without_targets_until_one_succeeds(
    world: World,
) -> None:
    client = world.gateway(KEYS_A, {"org-alpha": "Alpha"})
    world.apis[0].refuse_project_list = True
    collector = world.collector(world.account("main", client))
    assert up_targets(scrape(collector)) == {}
    world.apis[0].refuse_project_list = False
    world.now += INTERVAL
    assert set(up_targets(scrape(collector))) == {("org-alpha", "cdn")}


def test_two_accounts_on_two_gateways_publish_their_own_targets_each_with_its_keys(
    world: World,
) -> None:
    client_a = world.gateway(KEYS_A, {"org-alpha": "Alpha"})
    client_b = world.gateway(KEYS_B, {"org-beta": "Beta"})
    collector = world.collector(world.account("a", client_a), world.account("b", client_b))
    series = scrape(collector)
    assert up_targets(series) == {("org-alpha", "cdn"): 1, ("org-beta", "cdn"): 1}
    assert infos(series) == {("a", "org-alpha", "Alpha"), ("b", "org-beta", "Beta")}
    for api, project in zip(world.apis, ("org-alpha", "org-beta"), strict=True):
        tasks = [r for r in api.requests if r.action == PREFETCH_ACTION]
        assert {r.params.get("ProjectId") for r in tasks} == {project}
    counted = value_of(collector, "ucdn_api_requests_total", action=PROJECTS_ACTION, outcome="ok")
    assert counted == 2  # one discovery per account, both counted by the process


def test_a_target_two_accounts_discover_is_collected_from_the_first_with_one_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    client_a = world.gateway(KEYS_A, {"org-shared": "Shared"})
    client_b = world.gateway(KEYS_B, {"org-shared": "Shared", "org-beta": "Beta"})
    collector = world.collector(world.account("a", client_a), world.account("b", client_b))
    with caplog.at_level(logging.WARNING, logger="exporter.collection.catalogue"):
        scrape(collector)
        series = scrape(collector)
    assert set(up_targets(series)) == {("org-shared", "cdn"), ("org-beta", "cdn")}
    assert ("a", "org-shared", "Shared") in infos(series)
    [line] = [r for r in caplog.records if r.name == "exporter.collection.catalogue"]
    assert line.__dict__["fields"] == {
        "project_id": "org-shared",
        "platform": "cdn",
        "account": "a",
        "skipped_account": "b",
    }
    shared_from_b = [r for r in world.apis[1].requests if r.params.get("ProjectId") == "org-shared"]
    assert shared_from_b == []


def test_shard_of_is_fnv_1a_of_the_utf8_project_id() -> None:
    # FNV-1a 32-bit known answers: "" is the offset basis, "a" 0xe40c292c, "foobar" 0xbf9cf968.
    assert [shard_of(pid, 2**32) for pid in ("", "a", "foobar")] == [
        0x811C9DC5,
        0xE40C292C,
        0xBF9CF968,
    ]
    assert shard_of("org-é", 7) == shard_of("org-é", 7)
    assert shard_of("anything", 1) == 0
    with pytest.raises(ValueError, match="total_shards"):
        shard_of("a", 0)


def test_three_shards_hold_every_target_exactly_once(world: World) -> None:
    projects = {f"org-{index:03d}": f"P{index}" for index in range(30)}
    client = world.gateway(KEYS_A, projects)
    held: list[Target] = []
    for shard in range(3):
        lister = AccountProjects("main", client, list(projects))
        catalogue = Catalogue(
            [Account(lister, ("cdn", "dcdn"), client)], shard=shard, total_shards=3
        )
        assert catalogue.shard == (shard, 3)
        entries = catalogue.entries()
        assert entries, "each of three shards of 30 projects holds some"
        # A project's platforms stay together on one shard.
        for entry in entries:
            assert shard_of(entry.target.project_id, 3) == shard
        held.extend(entry.target for entry in entries)
    every = {Target(pid, platform) for pid in projects for platform in ("cdn", "dcdn")}
    assert sorted(held) == sorted(every)


def test_a_probe_of_another_shards_target_is_not_allowed(world: World) -> None:
    client = world.gateway(KEYS_A, {"org-alpha": "Alpha", "org-beta": "Beta"})
    shard = shard_of("org-alpha", 2)
    collector = world.collector(world.account("main", client), shard=shard, total=2)
    targets = collector.targets
    assert Target("org-alpha", "cdn") in targets
    expected = {Target(p, "cdn") for p in ("org-alpha", "org-beta") if shard_of(p, 2) == shard}
    assert set(targets) == expected
