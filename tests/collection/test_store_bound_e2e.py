"""A target's store stays within ``MAX_STORED_TASKS`` while a gateway adds thousands of
finished tasks per collection: the exporter as a process, its memory read from /proc.

Passing the bound fails the target (``up 0``, logged as ``invalid_response`` naming the
setting) and drops its store; every later collection is a full sync within the same bound,
so memory stays put however large the window grows, and the target is ``up 1`` again once
the window holds fewer tasks. ``benchmarks/bench_store_bound.py`` measures the same at
25,000 tasks a collection, with the default bound.
"""

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import exporter_args
from faultkit import Exporter, Scrape
from simfaults import SimulatedApi
from simworld import GrowingWorld

from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY

pytestmark = pytest.mark.e2e

BOUND = 20_000
GROWTH = 8_000  # finished tasks added before each scrape
STEPS = 10  # the bound is passed at the third: 24,500 tasks, and the world grows on
# What a stored task costs in resident memory, at most (about 1 KB measured, of which
# 600 bytes are the objects kept: docs/operating.md), and what a collection reads besides.
TASK_BYTES = 1500
COLLECTION_MB = 25


@pytest.fixture
def world() -> Iterator[tuple[GrowingWorld, SimulatedApi]]:
    grown = GrowingWorld()
    grown.grow(500, int(time.time()) - 3600)
    api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, grown).start()
    yield grown, api
    api.stop()


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (the most ever resident), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        name: int(found.group(1)) / 1024
        for name in ("VmRSS", "VmHWM")
        if (found := re.search(rf"^{name}:\s+(\d+)", status, re.MULTILINE))
    }


def published_tasks(scrape: Scrape) -> float | None:
    return scrape.value("ucdn_prefetch_tasks", status="success")


def test_the_store_stays_within_its_bound_while_the_gateway_adds_thousands_of_tasks(
    world: tuple[GrowingWorld, SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    grown, api = world
    exporter = start_exporter(
        *exporter_args(
            api,
            "--task-kinds",
            "prefetch",
            "--quota-interval-seconds",
            "0",
            "--overlap-seconds",
            "0",
            "--max-stored-tasks",
            str(BOUND),
        )
    )
    pid = exporter.process.pid
    first = exporter.scrape(wait=40)
    assert (first.up(), published_tasks(first)) == (1, 500)
    base = memory_mb(pid)["VmRSS"]
    ups, resident = [], []
    for _ in range(STEPS):
        grown.grow(GROWTH, int(time.time()))
        scrape = exporter.scrape(wait=40)
        ups.append(scrape.up())
        resident.append(memory_mb(pid)["VmRSS"])
    peak = memory_mb(pid)["VmHWM"]
    failures = exporter.failures(at_least=STEPS - 2)

    assert ups == [1, 1, *[0] * (STEPS - 2)], (ups, exporter.log())
    assert len(failures) == STEPS - 2
    detail = f"more than max_stored_tasks ({BOUND}) tasks held for one target and kind"
    assert {(f["reason"], f["detail"]) for f in failures} == {("invalid_response", detail)}
    # The bound's figure: what a full store costs, and one collection's reading besides.
    figure = BOUND * TASK_BYTES / 1e6 + COLLECTION_MB
    assert peak - base < figure, (base, resident, peak)
    # Failing collections keep nothing: memory does not grow with the world (8 MB a step
    # without the bound), past a few megabytes of the allocator's own.
    assert max(resident[-4:]) - min(resident[-4:]) < 8, (base, resident)

    grown.shrink(10_000)
    recovered = exporter.scrape(wait=40)
    assert (recovered.up(), published_tasks(recovered)) == (1, 10_000)
