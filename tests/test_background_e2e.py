"""Background collection as a user runs it: the exporter as a process against a simulated
account of 500 projects (2,000 targets: both platforms, both kinds) on loopback.

Every scrape answers within its deadline whatever the planner is doing, the threads stay
bounded by the settings rather than the targets, every target's figures arrive; and a
gateway that refuses requests for its rate (RetCode 153) makes the exporter lower its
pace by itself, in a log line and a gauge.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exposition import Samples
from faultkit import Exporter, exporter_args
from simfaults import SimulatedApi

from exporter.metrics import API_PACE
from exporter.simulator.account import numbered_projects
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import GeneratedDataset

pytestmark = pytest.mark.e2e

PROJECTS = 500
TARGETS = PROJECTS * 2 * 2  # platforms x kinds
TIMEOUT_HEADER = 30.0  # Prometheus' usual scrape timeout
# Well under it: the exposition of 2,000 targets (some 20 MB) is all a scrape costs, even
# while eight collections run beside it.
ANSWER_SECONDS = 15.0
# Web server threads, the page pool, the quota sweeps' pool, the planner and its pool,
# the runtime's own: far below one per target.
MOST_THREADS = 100


def account_api(rate_limit: int | None = None) -> SimulatedApi:
    dataset = GeneratedDataset(20, 10, now=int(time.time()), idle_share=0.5)
    return SimulatedApi(
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        dataset,
        projects=numbered_projects(PROJECTS),
        rate_limit=rate_limit,
    ).start()


@pytest.fixture
def big_account() -> Iterator[SimulatedApi]:
    api = account_api()
    yield api
    api.stop()


def start(api: SimulatedApi, *extra: str) -> Exporter:
    args = exporter_args(
        api.url,
        "--project-ids",
        "auto",
        "--platforms",
        "cdn,dcdn",
        "--background-collection",
        "--log-level",
        "info",
        *extra,
        private_key=DEMO_PRIVATE_KEY,
        pipeline=True,
    )
    args[args.index("--public-key") + 1] = DEMO_PUBLIC_KEY
    return Exporter(args).wait_started(30)


def ups(parsed: Samples) -> list[float]:
    return [v for (name, _), v in parsed.items() if name in ("ucdn_prefetch_up", "ucdn_refresh_up")]


def threads(exporter: Exporter) -> int:
    status = Path(f"/proc/{exporter.process.pid}/status").read_text()
    match = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
    assert match
    return int(match[1])


def test_thousands_of_targets_answer_within_the_deadline_with_bounded_threads(
    big_account: SimulatedApi,
) -> None:
    exporter = start(big_account, "--max-collection-threads", "8")
    try:
        most_threads = 0
        give_up = time.monotonic() + 90
        while True:
            scrape = exporter.scrape(TIMEOUT_HEADER, wait=TIMEOUT_HEADER)
            assert scrape.status == 200
            assert scrape.seconds < ANSWER_SECONDS, scrape.seconds
            up = ups(scrape.samples())
            assert len(up) == TARGETS  # every target, collected yet or not
            most_threads = max(most_threads, threads(exporter))
            if all(value == 1 for value in up):
                break
            assert time.monotonic() < give_up, f"{sum(up)} of {TARGETS} up"
            time.sleep(1.0)
        assert most_threads <= MOST_THREADS
    finally:
        exporter.stop()


def test_a_gateway_refusing_for_its_rate_lowers_the_pace_by_itself() -> None:
    api = account_api(rate_limit=10)
    exporter = start(api, "--max-api-requests-per-second", "40", "--quota-interval-seconds", "0")
    try:
        give_up = time.monotonic() + 30
        lowered: list[dict[str, str]] = []
        while not lowered:
            assert time.monotonic() < give_up, "no pace lowered"
            lowered = [r for r in exporter.log_records() if "pace lowered" in r.get("msg", "")]
            time.sleep(0.2)
        assert float(lowered[0]["pace_requests_per_second"]) == 20
        assert float(lowered[0]["configured_requests_per_second"]) == 40
        pace = exporter.scrape(TIMEOUT_HEADER).value(API_PACE.name, account="default")
        assert pace is not None and pace < 40
    finally:
        exporter.stop()
        api.stop()
