"""Three shards discovering one simulated account of nine projects, scraped by a real
Prometheus both ways that docs/scaling.md shows: each replica's ``/metrics``, and each
target on ``/probe`` found through the replicas' ``/sd`` with ``http_sd_configs``. Either
way every target's ``ucdn_prefetch_up`` is stored exactly once: no target missing, none
twice; and each project's ``ucdn_project_info`` once, with the name the dashboard shows.

The scrape configs are the docs' own YAML blocks, with their addresses pointed at the
exporter processes on loopback and their intervals shortened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import exporter_args, installed, stop_process
from faultkit import Exporter
from promkit import Prometheus, run_prometheus, wait_for
from simfaults import SimulatedApi
from test_prometheus_e2e import board, grafana_query_result_line

from exporter.simulator.account import Project
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SCALING = ROOT / "docs" / "scaling.md"
YAML_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.DOTALL)
SHARDS = 3
NAMES = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris"]
ACCOUNT = [
    Project(f"org-{name}", f"Shop {name.title()}", is_default=index == 0)
    for index, name in enumerate(NAMES)
]
PROJECTS = [project.project_id for project in ACCOUNT]
PLATFORMS = ("cdn", "dcdn")
TARGETS = {(project, platform) for project in PROJECTS for platform in PLATFORMS}
DEADLINE_SECONDS = 90.0


def doc_job(*, needs: str, lacks: str) -> dict[str, Any]:
    """The one scrape job of docs/scaling.md's shard section that holds ``needs`` and not
    ``lacks``, as a whole Prometheus configuration."""
    shards = SCALING.read_text().split("## Shards", 1)[1].split("\n## ", 1)[0]
    (block,) = [
        b for b in YAML_BLOCK.findall(shards) if "job_name" in b and needs in b and lacks not in b
    ]
    config: dict[str, Any] = yaml.safe_load(block)
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="2s", scrape_timeout="2s")
    return config


def host_port(exporter: Exporter) -> str:
    return urlsplit(exporter.url).netloc


@pytest.fixture(scope="module")
def shards() -> Iterator[list[Exporter]]:
    """Three replicas, shard 0, 1 and 2 of 3, each discovering the account's projects."""
    installed("prometheus")  # skip or fail before starting anything
    now = int(time.time())
    dataset = StaticDataset(
        {
            (project, platform == "dcdn"): generate_tasks(3, 2, now=now, seed=index)
            for index, (project, platform) in enumerate(sorted(TARGETS))
        }
    )
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, projects=ACCOUNT) as api:
        replicas = [
            Exporter(
                exporter_args(
                    api,
                    "--project-ids",
                    "auto",
                    "--platforms",
                    ",".join(PLATFORMS),
                    "--total-shards",
                    str(SHARDS),
                    "--shard",
                    str(shard),
                )
            )
            for shard in range(SHARDS)
        ]
        try:
            yield [replica.wait_started() for replica in replicas]
        finally:
            for replica in replicas:
                replica.stop()


def prometheus_with(directory: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    process, prometheus = run_prometheus(directory, config)
    try:

        def every_target_up() -> bool:
            targets = prometheus.api("targets")["activeTargets"]
            return bool(targets) and all(t["health"] == "up" for t in targets)

        def every_target_stored() -> bool:
            return len(prometheus.query("ucdn_prefetch_up")) >= len(TARGETS)

        end = time.monotonic() + DEADLINE_SECONDS
        wait_for("every target up", every_target_up, prometheus, end)
        wait_for("every target's series stored", every_target_stored, prometheus, end)
        yield prometheus
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def by_metrics(
    shards: list[Exporter], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """docs/scaling.md's job that scrapes each shard's /metrics."""
    config = doc_job(needs="static_configs", lacks="metrics_path")
    (group,) = config["scrape_configs"][0]["static_configs"]
    group["targets"] = [host_port(replica) for replica in shards]
    yield from prometheus_with(tmp_path_factory.mktemp("prometheus-metrics"), config)


@pytest.fixture(scope="module")
def by_sd(shards: list[Exporter], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """docs/scaling.md's job that probes each target found through the shards' /sd."""
    config = doc_job(needs="http_sd_configs", lacks="kind: ScrapeConfig")
    (job,) = config["scrape_configs"]
    job["http_sd_configs"] = [
        {"url": f"{replica.url}sd", "refresh_interval": "2s"} for replica in shards
    ]
    (replicas,) = job["static_configs"]
    replicas["targets"] = [host_port(replica) for replica in shards]
    yield from prometheus_with(tmp_path_factory.mktemp("prometheus-sd"), config)


def collected(replica: Exporter) -> set[tuple[str, str]]:
    """(project_id, platform) of every target a replica's /metrics carries."""
    return {
        (labels["project_id"], labels["platform"])
        for name, label_set in replica.metrics()
        if name == "ucdn_prefetch_up"
        for labels in [dict(label_set)]
    }


def stored_targets(prometheus: Prometheus) -> list[tuple[str, str]]:
    """(project_id, platform) of every stored ``ucdn_prefetch_up`` series, repeats kept."""
    return sorted(
        (series["metric"]["project_id"], series["metric"]["platform"])
        for series in prometheus.query("ucdn_prefetch_up")
    )


def test_each_shard_collects_a_part_and_together_all(shards: list[Exporter]) -> None:
    parts = [collected(replica) for replica in shards]
    assert all(0 < len(part) < len(TARGETS) for part in parts), parts
    assert sorted(target for part in parts for target in part) == sorted(TARGETS)


def test_scraping_each_shards_metrics_stores_every_target_once(by_metrics: Prometheus) -> None:
    assert stored_targets(by_metrics) == sorted(TARGETS)
    assert {s["value"][1] for s in by_metrics.query("ucdn_prefetch_up")} == {"1"}
    # The replicas' own series, once per replica.
    assert len(by_metrics.query("ucdn_prefetch_exporter_build_info")) == SHARDS


def test_probing_the_targets_of_every_sd_stores_every_target_once(by_sd: Prometheus) -> None:
    assert stored_targets(by_sd) == sorted(TARGETS)
    assert {s["value"][1] for s in by_sd.query("ucdn_prefetch_up")} == {"1"}
    assert len(by_sd.query("ucdn_prefetch_exporter_build_info")) == SHARDS


def test_sd_sends_each_probe_to_the_shard_that_collects_it(
    by_sd: Prometheus, shards: list[Exporter]
) -> None:
    targets = by_sd.api("targets")["activeTargets"]
    probes = [t for t in targets if "/probe?" in t["scrapeUrl"]]
    assert sorted(t["labels"]["instance"] for t in probes) == sorted(
        f"{project}/{platform}" for project, platform in TARGETS
    )
    collected_by = {
        target: host_port(replica) for replica in shards for target in collected(replica)
    }
    for probe in probes:
        project, platform = probe["labels"]["instance"].split("/")
        assert urlsplit(probe["scrapeUrl"]).netloc == collected_by[project, platform]


def test_each_project_is_named_once_and_the_dashboard_shows_the_names(
    by_metrics: Prometheus,
) -> None:
    info = by_metrics.query("ucdn_project_info")
    assert sorted(s["metric"]["project_id"] for s in info) == sorted(PROJECTS)
    names = {project.project_id: project.name for project in ACCOUNT}
    assert {s["metric"]["project_id"]: s["metric"]["project_name"] for s in info} == names
    # The Project variable's options: each project's ID as the value, its name as the text.
    (variable,) = [v for v in board()["templating"]["list"] if v["name"] == "project_id"]
    query = re.fullmatch(r"query_result\((.+)\)", variable["query"])
    assert query, variable["query"]
    regex = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options = {}
    for series in by_metrics.query(query[1]):
        match = regex.search(grafana_query_result_line(series))
        assert match, series
        options[match["value"]] = match["text"]
    assert options == names
