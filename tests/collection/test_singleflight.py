"""A shared fetch runs until the latest deadline of its callers; an expired one is not joined.

In process, with a clock the test moves: the rule is about which fetch a caller gets,
so the test holds each load on an event and looks at which loads ran, with which
deadline. Then the same promise through the collector and a real simulator on loopback:
a scrape with 0.1 s left starts the fetch and a patient one that joins it still gets
``up 1``; and closing the collector answers a scrape stuck on a silent gateway at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from faultkit import CANARY, NOW, PUBLIC_KEY
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.collection.singleflight import SharedFetches, ShutdownError
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.static import StaticDataset, generate_tasks

SCRAPE_SECONDS = 10.0
WAIT = 5.0  # bounds every wait of the test; nothing here should take more than a moment


class Clock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class HeldLoads:
    """Loads that each block until released, recording the deadline each one was given."""

    def __init__(self) -> None:
        self.deadlines: list[Deadline] = []
        self._releases: list[threading.Event] = []
        self._lock = threading.Lock()
        self._started = threading.Condition(self._lock)

    def __call__(self, deadline: Deadline) -> int:
        release = threading.Event()
        with self._lock:
            self.deadlines.append(deadline)
            self._releases.append(release)
            number = len(self.deadlines)
            self._started.notify_all()
        assert release.wait(WAIT), "the test never released this load"
        return number

    def wait_started(self, count: int) -> None:
        with self._started:
            assert self._started.wait_for(lambda: len(self.deadlines) >= count, WAIT)

    def release(self, number: int) -> None:
        self._releases[number - 1].set()

    def release_all(self) -> None:
        for release in self._releases:
            release.set()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def loads() -> Iterator[HeldLoads]:
    held = HeldLoads()
    yield held
    held.release_all()


@pytest.fixture
def shared(clock: Clock) -> Iterator[SharedFetches[str, int]]:
    fetches: SharedFetches[str, int] = SharedFetches(ttl=0, max_workers=4, clock=clock)
    yield fetches
    fetches.close()


def scrape(clock: Clock, seconds: float = SCRAPE_SECONDS) -> Deadline:
    """A caller's deadline, ``seconds`` from the test clock's now."""
    return Deadline.after(seconds, clock)


def test_a_fetch_runs_until_the_latest_deadline_of_its_callers(
    shared: SharedFetches[str, int], loads: HeldLoads, clock: Clock
) -> None:
    first = shared.get("target", loads, scrape(clock, 0.1))  # a hasty caller starts it
    loads.wait_started(1)
    (deadline,) = loads.deadlines
    assert deadline.at == 100.1  # no longer than anyone waits
    clock.now += 0.05
    joined = shared.get("target", loads, scrape(clock))  # a patient one joins in time
    assert joined is first
    assert deadline.at == 100.05 + SCRAPE_SECONDS  # the fetch now lives as long as it waits
    clock.now += 1.0
    shared.get("target", loads, scrape(clock, 0.5))  # an earlier deadline shortens nothing
    assert deadline.at == 100.05 + SCRAPE_SECONDS
    loads.release(1)
    assert first.result(WAIT) == 1
    assert len(loads.deadlines) == 1


def test_an_expired_fetch_is_not_joined_and_its_end_leaves_its_successor_in_place(
    shared: SharedFetches[str, int], loads: HeldLoads, clock: Clock
) -> None:
    stale = shared.get("target", loads, scrape(clock))
    loads.wait_started(1)
    clock.now += SCRAPE_SECONDS  # no time left: the fetch can only fail from here on
    fresh = shared.get("target", loads, scrape(clock))
    assert fresh is not stale
    loads.wait_started(2)
    assert loads.deadlines[0].at == 100.0 + SCRAPE_SECONDS  # not moved by the late caller
    assert loads.deadlines[1].at == clock.now + SCRAPE_SECONDS  # the late caller's own
    loads.release(1)
    assert stale.result(WAIT) == 1
    time.sleep(0.2)  # the stale fetch's clean-up runs just after its result is set
    # Its clean-up must not have taken the fresh fetch out of the table: this joins it.
    assert shared.get("target", loads, scrape(clock)) is fresh
    loads.release(2)
    assert fresh.result(WAIT) == 2
    assert len(loads.deadlines) == 2


def test_close_answers_every_waiter_at_once_and_refuses_new_work(
    shared: SharedFetches[str, int], loads: HeldLoads
) -> None:
    waiting = shared.get("target", loads, Deadline.after(SCRAPE_SECONDS))
    loads.wait_started(1)
    started = time.monotonic()
    shared.close()
    with pytest.raises(ShutdownError):
        waiting.result(WAIT)
    after = shared.get("other", loads, Deadline.after(SCRAPE_SECONDS))
    with pytest.raises(ShutdownError):
        after.result(0)
    assert time.monotonic() - started < 1.0
    assert len(loads.deadlines) == 1  # nothing new was started


TARGET = Target("", "cdn")


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    dataset = StaticDataset({("", False): generate_tasks(6, 2, now=NOW)})
    upstream = SimulatedApi(PUBLIC_KEY, CANARY, dataset).start()
    yield upstream
    upstream.stop()


@pytest.fixture
def collector(api: SimulatedApi) -> Iterator[UcdnCollector]:
    client = ApiClient(api.url, PUBLIC_KEY, SecretStr(CANARY), options=ClientOptions())
    prefetch = UcdnCollector(client, [TARGET], default_timeout=10.0)
    yield prefetch
    prefetch.close()
    client.close()


def ups(metrics: Iterable[Any]) -> list[float]:
    return [s.value for m in metrics if m.name == "ucdn_prefetch_up" for s in m.samples]


def collect_async(
    pool: ThreadPoolExecutor, collector: UcdnCollector, seconds: float
) -> Future[list[Any]]:
    def collect(deadline: Deadline) -> list[Any]:
        return list(collector.collect_within(deadline))

    return pool.submit(collect, Deadline.after(seconds))


@pytest.mark.e2e  # seconds on loopback by design
def test_a_patient_scrape_joining_a_hasty_scrapes_fetch_gets_its_answer(
    api: SimulatedApi, collector: UcdnCollector
) -> None:
    """The hasty scrape starts the fetch with 0.1 s to live; the fetch must outlive it."""
    api.faults.delay(1.0)
    with ThreadPoolExecutor(2) as pool:
        hasty = collect_async(pool, collector, 0.1)
        time.sleep(0.05)  # the hasty scrape's fetch is on the wire
        patient = collect_async(pool, collector, 8.0)
        assert ups(hasty.result(WAIT)) == [0]
        assert ups(patient.result(WAIT + 5)) == [1]
    assert api.request_count() == 1, "the patient scrape started a fetch of its own"


def test_closing_the_collector_answers_a_scrape_stuck_on_a_silent_gateway_at_once(
    api: SimulatedApi, collector: UcdnCollector
) -> None:
    api.faults.hang()
    with ThreadPoolExecutor(1) as pool:
        stuck = collect_async(pool, collector, 8.0)
        give_up = time.monotonic() + WAIT
        while api.request_count() == 0 and time.monotonic() < give_up:
            time.sleep(0.02)
        assert api.request_count() == 1
        closed_at = time.monotonic()
        collector.close()
        assert ups(stuck.result(WAIT)) == [0]
        assert time.monotonic() - closed_at < 1.5
    started = time.monotonic()
    assert ups(collector.collect_within(Deadline.after(8.0))) == [0]  # refused, not sent
    assert time.monotonic() - started < 1.5
    assert api.request_count() == 1
