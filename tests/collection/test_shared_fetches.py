"""Concurrent scrapes share one upstream fetch per target; a cache window reuses answers.

Two Prometheus replicas, or a person with curl next to Prometheus, must not multiply
the load on the gateway: the simulator counts the requests it receives, per target,
while 20 scrapes run at once against an upstream slow enough for them to overlap.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from faultkit import CANARY, NOW, PUBLIC_KEY, Exporter, Scrape, exporter_args
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.gateway.answers import DOMAINS_ACTION, PREFETCH_ACTION, REFRESH_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

PARALLEL = 20
TARGETS = {("web", False): 15, ("web", True): 9, ("shop", False): 4}


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    dataset = StaticDataset(
        {
            target: generate_tasks(count, 2, now=NOW, seed=index)
            for index, (target, count) in enumerate(TARGETS.items())
        }
    )
    upstream = SimulatedApi(PUBLIC_KEY, CANARY, dataset).start()
    yield upstream
    upstream.stop()


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exporter in started:
        exporter.stop()


def start(
    api: SimulatedApi, exporters: list[Exporter], *extra: str, pipeline: bool = False
) -> Exporter:
    """The exporter on four targets; prefetch only unless ``pipeline`` (then every kind)."""
    targets = ("--project-ids", "web,shop", "--platforms", "cdn,dcdn")
    args = exporter_args(api.url, *targets, *extra, pipeline=pipeline)
    exporter = Exporter(args)
    exporters.append(exporter)
    return exporter.wait_started()


TASK_ACTIONS = (PREFETCH_ACTION, REFRESH_ACTION)


def test_twenty_parallel_scrapes_make_one_upstream_fetch_per_target(
    api: SimulatedApi, exporters: list[Exporter]
) -> None:
    exporter = start(api, exporters, pipeline=True)
    # Slow enough that every scrape arrives while the first fetches are still running.
    api.faults.delay(1.0)
    with ThreadPoolExecutor(PARALLEL) as pool:
        scrapes = list(pool.map(lambda _: exporter.scrape(8), range(PARALLEL)))
    assert [s.status for s in scrapes] == [200] * PARALLEL
    assert all(s.seconds < 7.5 for s in scrapes)
    # Four targets (two projects on two platforms); shop has no DCDN tasks, which is no error.
    # Each is fetched once per kind of task, and each project's domains are listed once.
    targets = {("web", False), ("web", True), ("shop", False), ("shop", True)}
    expected = {(target, action) for target in targets for action in TASK_ACTIONS}
    requested = [(r.target, r.action) for r in api.requests if r.action in TASK_ACTIONS]
    assert set(requested) == expected
    for fetch in expected:
        assert requested.count(fetch) == 1, f"{fetch} fetched {requested.count(fetch)} times"
    assert api.request_count(action=DOMAINS_ACTION) == 2
    for scrape in scrapes:
        ups = [v for (name, _), v in scrape.samples().items() if name == "ucdn_prefetch_up"]
        assert ups == [1.0] * 4
        assert (
            scrape.value("ucdn_prefetch_tasks", project_id="web", platform="cdn", status="success")
            is not None
        )


def scrape_pair(exporter: Exporter) -> tuple[Scrape, Scrape]:
    return exporter.scrape(5), exporter.scrape(5)


def test_with_a_cache_window_the_second_scrape_makes_no_request_and_help_says_so(
    api: SimulatedApi, exporters: list[Exporter]
) -> None:
    exporter = start(api, exporters, "--cache-seconds", "30")
    first, second = scrape_pair(exporter)
    assert api.request_count() == 4
    ups = [
        scrape.value("ucdn_prefetch_up", project_id=project, platform=platform)
        for scrape in (first, second)
        for project in ("web", "shop")
        for platform in ("cdn", "dcdn")
    ]
    assert ups == [1.0] * 8
    assert re.search(r"Answers are reused for up to 30(\.0)?s\.", second.text)
    note = "reused for up to 30"
    helps = {
        line.split()[2]: line for line in second.text.splitlines() if line.startswith("# HELP")
    }
    assert note in helps["ucdn_prefetch_tasks"]
    assert note in helps["ucdn_prefetch_up"]
    # How long this scrape took is always this scrape's own figure.
    assert note not in helps["ucdn_prefetch_scrape_duration_seconds"]
    assert first.value(
        "ucdn_prefetch_tasks", project_id="shop", platform="cdn", status="success"
    ) == second.value("ucdn_prefetch_tasks", project_id="shop", platform="cdn", status="success")


def test_without_a_cache_every_scrape_fetches_and_help_promises_nothing(
    api: SimulatedApi, exporters: list[Exporter]
) -> None:
    exporter = start(api, exporters)
    _, second = scrape_pair(exporter)
    assert api.request_count() == 8
    assert "reused" not in second.text


def test_failures_are_not_cached(api: SimulatedApi, exporters: list[Exporter]) -> None:
    exporter = start(api, exporters, "--cache-seconds", "30", "--max-retries", "0")
    api.faults.http_error(500, times=1, target=("shop", False))
    first, second = scrape_pair(exporter)
    assert first.value("ucdn_prefetch_up", project_id="shop", platform="cdn") == 0.0
    assert second.value("ucdn_prefetch_up", project_id="shop", platform="cdn") == 1.0
    # The three healthy targets were cached; only the failed one was asked again.
    assert api.request_count() == 5
    assert api.request_count("shop", False) == 2


def test_a_caller_with_a_short_deadline_gives_up_without_cancelling_the_shared_fetch(
    api: SimulatedApi,
) -> None:
    """In process: a scrape with 0.3 s left gets up 0; one with time left gets the same fetch."""
    client = ApiClient(api.url, PUBLIC_KEY, SecretStr(CANARY), options=ClientOptions())
    collector = UcdnCollector(client, [Target("", "cdn")])
    api.faults.delay(1.0)
    try:
        with ThreadPoolExecutor(2) as pool:
            patient = pool.submit(collector.collect_within, Deadline.after(5.0))
            time.sleep(0.1)  # let the patient caller start the fetch
            hasty = pool.submit(collector.collect_within, Deadline.after(0.3))
            results = {"hasty": hasty.result(10), "patient": patient.result(10)}
        ups = {
            name: [s.value for m in metrics if m.name == "ucdn_prefetch_up" for s in m.samples]
            for name, metrics in results.items()
        }
        assert ups == {"hasty": [0], "patient": [1]}
        assert api.request_count() == 1
    finally:
        collector.close()
        client.close()


TINY_TIMEOUT = 0.6  # minus the 0.5 s offset: 0.1 s, less than the gateway takes
NORMAL_SCRAPES = 15


def test_clients_flooding_with_a_tiny_timeout_do_not_fail_the_normal_scrapes(
    api: SimulatedApi, exporters: list[Exporter]
) -> None:
    """Two clients scrape in a loop with a 0.6 s timeout header while Prometheus scrapes
    with 10 s: the fetches the flood starts must not end at the flood's deadline."""
    exporter = start(api, exporters, "--max-scrape-timeout-seconds", "10")
    api.faults.delay(0.4)
    flooding = threading.Event()
    flooding.set()
    hasty: list[Scrape] = []

    def flood() -> None:
        while flooding.is_set():
            hasty.append(exporter.scrape(TINY_TIMEOUT))

    with ThreadPoolExecutor(2) as pool:
        flooders = [pool.submit(flood) for _ in range(2)]
        try:
            time.sleep(0.5)  # the flood's fetches are the ones in flight
            normal = [exporter.scrape(10) for _ in range(NORMAL_SCRAPES)]
        finally:
            flooding.clear()
        for flooder in flooders:
            flooder.result(15)
    ups = [v for s in normal for (name, _), v in s.samples().items() if name == "ucdn_prefetch_up"]
    assert ups == [1.0] * 4 * NORMAL_SCRAPES, f"{ups.count(0.0)} of {len(ups)} targets up 0"
    assert all(s.seconds < 9.5 for s in normal)
    # The flood was real: answered within its own deadline, mostly too short to get data
    # (up 1 only when it joined a fetch about to end).
    assert len(hasty) > 2 * NORMAL_SCRAPES
    assert all(s.status == 200 and s.seconds < TINY_TIMEOUT + 1.5 for s in hasty)
    hasty_ups = [v for s in hasty for (n, _), v in s.samples().items() if n == "ucdn_prefetch_up"]
    assert hasty_ups.count(0.0) > len(hasty_ups) / 2
    # Joined, not multiplied: far fewer fetches than scrapes (4 targets, about 0.4 s each).
    assert api.request_count() < 4 * (len(hasty) + NORMAL_SCRAPES) / 3


def test_sigterm_to_the_process_stops_the_exporter_promptly(api: SimulatedApi) -> None:
    # As systemd and Kubernetes send it: to the process, not to a thread.
    for _ in range(4):
        exporter = Exporter(exporter_args(api.url)).wait_started()
        exporter.scrape(5)
        code = exporter.stop(to_main_thread=False)
        assert not exporter.killed, "SIGTERM was ignored: the exporter had to be killed"
        assert code == 0
