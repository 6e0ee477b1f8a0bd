"""Incremental collection gives the figures of a full fetch, counts finished work once,
keeps stuck tasks in sight, and costs the requests the README promises.

Worlds of tasks evolve between collections (tasks arrive, URLs progress and finish,
tasks age out of the window, pages repeat tasks, TotalCount lies) and after every step
the collection's summary is compared with a full fetch of the same world at the same
moment, through the real client and the simulated API on loopback.
"""

import contextlib
import dataclasses
import gc
import itertools
import math
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import examples, url_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from simanswers import RetCodeAnswer
from simfaults import Faults
from simworld import World, fetch_window, task

from exporter.collection.kinds import TaskKind
from exporter.collection.store import StoreFullError, TaskStore
from exporter.collection.sync import Collection, SyncOptions, TaskSync
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions
from exporter.settings.target import Target
from exporter.simulator import hooks
from exporter.simulator.hooks import Fault, FixedDelay
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.protocol import Target as SimulatedTarget
from exporter.simulator.server import SimulatedApi
from exporter.summary.target_summary import SummaryLimits, TargetSummary, summarize

NOW = 1_790_000_000
LOOKBACK = 1000
OVERLAP = 100
HORIZON = 3000
TARGET = Target("shop", "cdn")
# Small caps, so that picking the newest series among stored and fetched tasks matters.
LIMITS = SummaryLimits(
    max_url_series=4, max_task_series=3, buckets=(10.0, 100.0, 1000.0), max_domain_series=2
)
KIND = TaskKind.named("prefetch", LIMITS)
RAW_STATUSES = ("wait", "process", "success", "failure", "unknow")
FINISHED = ("success", "failure")
HOSTS = ("https://a.example/", "https://B.example:8443/", "http://c.example/", "nohost/")


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[SimulatedApi, ApiClient]]:
    api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, World()).start()
    # Pages of three tasks, two in flight: every window of a few tasks takes several.
    # Retries: a keep-alive connection the server closed meanwhile must not fail a step.
    options = ClientOptions(page_size=3, parallel_pages=2, max_retries=2)
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=options)
    yield api, client
    client.close()
    api.stop()


@contextlib.contextmanager
def faults_on(api: SimulatedApi, faults: hooks.Faults) -> Iterator[None]:
    """The gateway misbehaves as ``faults`` say for the block, then is sound again."""
    api.faults = faults
    try:
        yield
    finally:
        api.faults = FixedDelay()


class FailNth:
    """The gateway answers its ``nth`` request from now (1 for the next) with an API error,
    so that a collection can fail part way: after its new tasks, or between lookups."""

    def __init__(self, nth: int) -> None:
        self._left = nth
        self._lock = threading.Lock()

    def take(self, target: SimulatedTarget | None, offset: int = 0) -> tuple[float, Fault | None]:
        with self._lock:
            self._left -= 1
            hit = self._left == 0
        return 0.0, RetCodeAnswer(230, "Params [TaskId.0] not available") if hit else None


def full_fetch(client: ApiClient, end: int) -> tuple[TargetSummary, set[str]]:
    """What a fetch of the whole window gives at ``end``, and the TaskIds it holds."""
    window = fetch_window(client, end, LOOKBACK)
    return summarize(window, LIMITS), {t.task_id for t in window.tasks if t.task_id}


def without_paging(summary: TargetSummary) -> TargetSummary:
    """The summary less the anomalies of paging, which only a fetch of the window sees."""
    anomalies = {**summary.anomalies, "duplicate_task": 0, "total_count_mismatch": 0}
    return dataclasses.replace(summary, anomalies=anomalies)


def is_done(entry: dict[str, Any]) -> bool:
    """Whether a task of the world is finished, for good."""
    urls = entry.get("UrlLists", [])
    return entry.get("Status") in FINISHED and all(u["Status"] in FINISHED for u in urls)


@st.composite
def urls(draw: st.DrawFn, created: int) -> list[dict[str, Any]]:
    entries = []
    for index in range(draw(st.integers(0, 4))):
        status = draw(st.sampled_from(RAW_STATUSES))
        finish = created + draw(st.integers(-5, 2000)) if status in FINISHED else 0
        host = draw(st.sampled_from(HOSTS))
        entries.append(
            url_entry(f"{host}{index}", status, created, finish, draw(st.integers(-5, 110)))
        )
    return entries


@st.composite
def tasks(draw: st.DrawFn, task_id: str | None, created: int) -> dict[str, Any]:
    return task(task_id, created, draw(st.sampled_from(RAW_STATUSES)), draw(urls(created)))


def evolve(data: st.DataObject, world: World, clock: list[int], serial: list[int]) -> None:
    """One step of the world: time passes, tasks arrive, unfinished ones move on."""
    step = data.draw(st.sampled_from(("advance", "arrive", "move", "finish")))
    if step == "advance":
        clock[0] += data.draw(st.integers(0, LOOKBACK // 2))
    elif step == "arrive":  # late, but within the overlap
        for _ in range(data.draw(st.integers(1, 3))):
            serial[0] += 1
            created = clock[0] - data.draw(st.integers(0, OVERLAP))
            world.put(data.draw(tasks(f"n{serial[0]}", created)))
    else:
        moving = sorted(i for i, t in world.tasks_by_id.items() if not is_done(t))
        if not moving:
            return
        entry = world.tasks_by_id[data.draw(st.sampled_from(moving))]
        created = entry["CreateTime"]
        if step == "move":
            world.put({**entry, "Status": data.draw(st.sampled_from(RAW_STATUSES))})
            world.put({**world.tasks_by_id[entry["TaskId"]], "UrlLists": data.draw(urls(created))})
        else:
            status = data.draw(st.sampled_from(FINISHED))
            done = [
                {**u, "Status": data.draw(st.sampled_from(FINISHED)), "FinishTime": clock[0]}
                for u in entry["UrlLists"]
            ]
            world.put({**entry, "Status": status, "UrlLists": done})


def expected_oldest(world: World, reference: TargetSummary, seen: set[str], end: int) -> int | None:
    """The window's oldest unfinished task, or an older stuck one the window once held."""
    stuck = [
        t["CreateTime"]
        for task_id, t in world.tasks_by_id.items()
        if task_id in seen
        and t.get("Status") in ("wait", "process")
        and end - HORIZON <= t["CreateTime"] < end - LOOKBACK
        and t["CreateTime"] > 0
    ]
    if reference.oldest_unfinished_created is not None:
        stuck.append(reference.oldest_unfinished_created)
    return min(stuck, default=None)


@settings(
    max_examples=examples(300, fast=8),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_collection_gives_the_figures_of_a_full_fetch(
    gateway: tuple[SimulatedApi, ApiClient], data: st.DataObject
) -> None:
    api, _ = gateway
    # Small pages make a full fetch cost more than a collection between full syncs, so that
    # those are incremental (a window a full fetch reads as cheaply is always read whole).
    paging = ClientOptions(page_size=data.draw(st.integers(1, 3)), parallel_pages=2, max_retries=2)
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=paging)
    clock = [NOW]
    count = data.draw(st.integers(0, 10))
    world = World(
        [
            data.draw(tasks(f"t{i}", NOW - data.draw(st.integers(0, LOOKBACK + 200))))
            for i in range(count)
        ]
    )
    if data.draw(st.integers(0, 9)) == 0:  # now and then a task without a TaskId
        world.put(data.draw(tasks(None, NOW - 10)))
    world.repeat = data.draw(st.booleans())
    api.dataset = world
    api.total_count_error = data.draw(st.integers(-2, 2))
    options = SyncOptions(
        lookback_seconds=LOOKBACK,
        resync_seconds=data.draw(st.sampled_from((math.inf, 0, 700))),
        overlap_seconds=OVERLAP,
        lookup_batch=data.draw(st.integers(1, 4)),
        stuck_horizon_seconds=HORIZON,
    )
    sync = TaskSync(client, TARGET, KIND, options, wall_clock=lambda: clock[0])
    seen: set[str] = set()
    serial = [0]
    counted: list[int] = []
    try:
        for step in range(data.draw(st.integers(1, 6))):
            if step:
                evolve(data, world, clock, serial)
                if data.draw(st.integers(0, 3)) == 0:  # a collection fails part way first
                    # What it read before is in the store: the next one goes on from there.
                    failing = FailNth(data.draw(st.integers(1, 4)))
                    with faults_on(api, failing), contextlib.suppress(ApiError):
                        sync.collect(Deadline.after(10))
            collection = sync.collect(Deadline.after(10))
            reference, ids = full_fetch(client, clock[0])
            seen |= ids
            reference.oldest_unfinished_created = expected_oldest(world, reference, seen, clock[0])
            if collection.sync == "full":
                assert collection.summary == reference
            assert without_paging(collection.summary) == without_paging(reference)
            assert collection.counts is not None
            total = sum(collection.counts.urls.values()) + sum(collection.counts.tasks.values())
            assert total >= max(counted, default=0), "a counter went down"
            counted.append(total)
    finally:
        api.total_count_error = 0
        client.close()


def test_a_change_to_a_finished_task_is_seen_at_the_next_full_sync(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    api, client = gateway
    done = task(
        "d", NOW - 50, "success", [url_entry("https://a.example/x", "success", NOW - 50, NOW - 40)]
    )
    world = World([done, *fillers()])
    api.dataset = world
    clock = [NOW]
    options = SyncOptions(lookback_seconds=LOOKBACK, resync_seconds=100, overlap_seconds=10)
    sync = TaskSync(client, TARGET, KIND, options, wall_clock=lambda: clock[0])
    sync.collect(Deadline.after(10))
    world.put({**done, "Status": "failure"})  # which the API should never do
    clock[0] += 60
    between = sync.collect(Deadline.after(10))
    assert (between.sync, between.summary.tasks_by_status["success"]) == ("incremental", 10)
    clock[0] += 60
    resynced = sync.collect(Deadline.after(10))
    assert resynced.sync == "full"
    assert resynced.summary.tasks_by_status["failure"] == 1


def collect(sync: TaskSync) -> Collection:
    return sync.collect(Deadline.after(10))


def one_url(task_id: str, created: int, status: str, finish: int = 0) -> dict[str, Any]:
    return task(
        task_id,
        created,
        status,
        [url_entry(f"https://a.example/{task_id}", status, created, finish)],
    )


def fillers(count: int = 9) -> list[dict[str, Any]]:
    """Finished tasks that stay in the window, before the overlap: with them a full fetch takes
    four pages of three, more than a collection between full syncs costs, so those are
    incremental."""
    return [one_url(f"fill{i}", NOW - 200 - i, "success", NOW - 190) for i in range(count)]


def syncing(
    gateway: tuple[SimulatedApi, ApiClient], world: World, clock: list[int], **options: Any
) -> TaskSync:
    api, client = gateway
    api.dataset = world
    chosen = SyncOptions(
        **{
            "lookback_seconds": LOOKBACK,
            "resync_seconds": math.inf,
            "overlap_seconds": OVERLAP,
            "stuck_horizon_seconds": HORIZON,
            **options,
        }
    )
    return TaskSync(client, TARGET, KIND, chosen, wall_clock=lambda: clock[0])


def test_finished_work_is_counted_once_and_not_what_the_first_collection_found(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    world = World(
        [
            one_url("old", NOW - 500, "success", NOW - 490),
            one_url("w", NOW - 400, "wait"),
            *fillers(),
        ]
    )
    sync = syncing(gateway, world, clock)
    first = collect(sync)
    assert first.counts is not None
    assert (first.counts.urls, first.counts.tasks) == ({"failure": 0, "success": 0},) * 2
    world.put(one_url("w", NOW - 400, "failure", NOW - 10))  # an old one finishes
    world.put(one_url("new", NOW - 5, "success", NOW - 1))  # a new one arrives finished
    clock[0] += 30
    second = collect(sync)
    assert second.sync == "incremental"
    assert second.counts is not None
    assert second.counts.urls == {"failure": 1, "success": 1}
    assert second.counts.tasks == {"failure": 1, "success": 1}
    for _ in range(2):  # again, and through a full sync: nothing counts twice
        clock[0] += 30
        again = collect(sync)
        assert again.counts is not None
        assert (again.counts.urls, again.counts.tasks) == (second.counts.urls, second.counts.tasks)
        sync._options = dataclasses.replace(sync._options, resync_seconds=0)
    assert again.sync == "full"
    assert again.counts is not None
    assert again.counts.created == first.counts.created == NOW


def test_a_stuck_task_stays_the_oldest_unfinished_until_it_finishes(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    world = World(
        [
            one_url("stuck", NOW - 900, "process"),
            one_url("done", NOW - 800, "success", NOW - 700),
            *fillers(),
        ]
    )
    sync = syncing(gateway, world, clock)
    assert collect(sync).summary.oldest_unfinished_created == NOW - 900
    clock[0] += 400  # both leave the window: the finished one's figures go, the stuck one stays
    later = collect(sync)
    assert later.sync == "incremental"
    assert later.summary.tasks_by_status == {
        **dict.fromkeys(later.summary.tasks_by_status, 0),
        "success": 9,
    }
    assert later.summary.oldest_unfinished_created == NOW - 900
    assert later.requests == 2  # the new tasks, and the stuck one by its TaskId
    world.put(one_url("stuck", NOW - 900, "success", clock[0]))
    clock[0] += 60
    finished = collect(sync)
    assert finished.summary.oldest_unfinished_created is None
    assert finished.counts is not None
    assert finished.counts.tasks["success"] == 1


def test_a_stuck_task_is_given_up_at_the_horizon(gateway: tuple[SimulatedApi, ApiClient]) -> None:
    clock = [NOW]
    world = World([one_url("stuck", NOW - 900, "wait")])
    sync = syncing(gateway, world, clock, stuck_horizon_seconds=1200)
    collect(sync)
    clock[0] += 200
    assert collect(sync).summary.oldest_unfinished_created == NOW - 900
    clock[0] += 200
    gone = collect(sync)
    assert (gone.summary.oldest_unfinished_created, gone.requests) == (None, 1)


def test_a_steady_collection_asks_for_new_tasks_and_the_unfinished_in_batches(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    unfinished = [one_url(f"u{i}", NOW - 900 + i, "process") for i in range(5)]
    finished = [one_url(f"f{i}", NOW - 800 + i, "success", NOW - 700) for i in range(20)]
    sync = syncing(gateway, World([*unfinished, *finished]), clock, lookup_batch=2)
    first = collect(sync)
    assert (first.sync, first.requests) == ("full", math.ceil(25 / 3) + (25 % 3 == 0))
    clock[0] += 10
    steady = collect(sync)
    # One page of new tasks (none), then ceil(5 / 2) lookups: never the finished ones.
    assert (steady.sync, steady.requests) == ("incremental", 1 + 3)


def test_resync_seconds_zero_fetches_the_whole_window_every_time(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    world = World([one_url("w", NOW - 100, "wait"), *fillers()])
    sync = syncing(gateway, world, clock, resync_seconds=0)
    assert [collect(sync).sync for _ in range(3)] == ["full"] * 3


def test_a_task_without_a_task_id_makes_every_collection_a_full_one(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    world = World(
        [one_url("w", NOW - 100, "wait"), task(None, NOW - 50, "success", []), *fillers()]
    )
    sync = syncing(gateway, world, clock)
    assert [collect(sync).sync for _ in range(2)] == ["full", "full"]


def test_a_failed_collection_costs_nothing_but_its_requests(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    api, _ = gateway
    clock = [NOW]
    world = World([one_url("w", NOW - 100, "wait"), *fillers()])
    sync = syncing(gateway, world, clock)
    collect(sync)
    world.put(one_url("w", NOW - 100, "success", NOW - 1))
    failing = Faults()
    failing.ret_code(230, "Params [TaskId.0] not available")
    with faults_on(api, failing), pytest.raises(ApiError):
        collect(sync)
    after = collect(sync)
    assert after.counts is not None
    assert (after.sync, after.counts.tasks["success"]) == ("incremental", 1)
    assert after.summary.tasks_by_status["success"] == 10


def test_a_collection_that_fails_between_lookups_leaves_what_it_read_for_the_next(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    api, client = gateway
    clock = [NOW]
    world = World(
        [
            one_url("a", NOW - 300, "wait"),
            one_url("b", NOW - 200, "process"),
            one_url("c", NOW - 100, "wait"),
            *fillers(),
        ]
    )
    sync = syncing(gateway, world, clock, lookup_batch=1)
    collect(sync)
    clock[0] += 30
    world.put(one_url("a", NOW - 300, "success", clock[0]))
    world.put(one_url("c", NOW - 100, "failure", clock[0]))
    world.put(one_url("new", clock[0] - 5, "success", clock[0] - 1))
    # The new tasks and the first lookup ("a") are read; the lookup of "b" fails.
    with faults_on(api, FailNth(3)), pytest.raises(ApiError):
        collect(sync)
    after = collect(sync)
    reference, _ = full_fetch(client, clock[0])
    assert after.sync == "incremental"
    assert without_paging(after.summary) == without_paging(reference)
    assert after.counts is not None
    # "a" and "new" were counted by the failed collection, "c" by this one: each once.
    assert after.counts.tasks == {"success": 2, "failure": 1}
    assert after.counts.urls == {"success": 2, "failure": 1}


def test_a_collection_ended_by_a_bug_of_ours_drops_the_store(
    gateway: tuple[SimulatedApi, ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [NOW]
    world = World([one_url("w", NOW - 100, "wait"), *fillers()])
    sync = syncing(gateway, world, clock)
    first = collect(sync)
    world.put(one_url("w", NOW - 100, "success", NOW - 1))
    summary = TaskStore.summary
    with monkeypatch.context() as patched:

        def broken(store: TaskStore, window: Any) -> TargetSummary:
            raise RuntimeError("a bug")

        patched.setattr(TaskStore, "summary", broken)
        clock[0] += 30
        with pytest.raises(RuntimeError):
            collect(sync)
    assert TaskStore.summary is summary
    clock[0] += 30
    afresh = collect(sync)
    # As after a restart: a full sync, whose finished work is not counted, and counters
    # that start again from zero with a new _created.
    assert afresh.sync == "full"
    assert afresh.counts is not None and first.counts is not None
    assert afresh.counts.tasks == {"success": 0, "failure": 0}
    assert afresh.counts.created == clock[0] != first.counts.created


class Arrivals:
    """Holds every request ``seconds`` before answering it, and notes when each arrived."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.times: list[float] = []
        self._lock = threading.Lock()

    def take(self, target: SimulatedTarget | None, offset: int = 0) -> tuple[float, Fault | None]:
        with self._lock:
            self.times.append(time.monotonic())
        return self.seconds, None


def test_collections_of_one_target_take_turns(gateway: tuple[SimulatedApi, ApiClient]) -> None:
    api, _ = gateway
    clock = [NOW]
    world = World([one_url("w", NOW - 100, "wait"), *fillers()])
    sync = syncing(gateway, world, clock)
    collect(sync)
    clock[0] += 30
    world.put(one_url("w", NOW - 100, "success", NOW - 1))
    arrivals = Arrivals(0.3)
    start = threading.Barrier(2)
    results: list[Collection] = []

    def one() -> None:
        start.wait()
        results.append(sync.collect(Deadline.after(30)))

    threads = [threading.Thread(target=one) for _ in range(2)]
    with faults_on(api, arrivals):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(results) == 2
    # Each request is held 0.3 s: had the second collection not waited for the first,
    # its first request would have arrived while the first collection's was held.
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals.times)]
    assert len(arrivals.times) >= 2 and min(gaps) >= 0.29, gaps
    assert all(r.counts is not None and r.counts.tasks["success"] == 1 for r in results)


def test_a_window_a_full_fetch_reads_as_cheaply_is_fetched_whole_every_time(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    world = World([one_url("w", NOW - 100, "wait"), one_url("d", NOW - 90, "success", NOW - 80)])
    sync = syncing(gateway, world, clock)
    collections = []
    for _ in range(3):
        clock[0] += 30
        collections.append(collect(sync))
    # One page holds the window; between full syncs a page of new tasks and a lookup are two.
    assert [(c.sync, c.requests) for c in collections] == [("full", 1)] * 3
    world.put(one_url("w", NOW - 100, "success", clock[0]))
    clock[0] += 30
    finished = collect(sync)
    assert finished.counts is not None
    assert finished.counts.tasks["success"] == 1  # counted once, as between full syncs


def arrive_finished(world: World, created: int, count: int, prefix: str) -> None:
    """``count`` tasks arrive, created at ``created`` and already finished."""
    for index in range(count):
        world.put(one_url(f"{prefix}{index}", created, "success", created))


def test_a_store_past_max_stored_tasks_fails_its_collection_and_is_let_go_at_once(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    world = World(fillers())
    sync = syncing(gateway, world, clock, max_stored_tasks=20)
    collect(sync)
    clock[0] += 30
    arrive_finished(world, clock[0], 11, "a")
    at_bound = collect(sync)  # 20 tasks held: at the bound, not past it
    assert (at_bound.sync, at_bound.summary.tasks_by_status["success"]) == ("incremental", 20)
    assert sync._state is not None
    held = weakref.ref(sync._state.store)
    clock[0] += 30
    arrive_finished(world, clock[0], 1, "b")
    gc.disable()  # what is let go must be freed at once, not by the cycle collector
    try:
        with pytest.raises(StoreFullError) as failed:
            collect(sync)
        reason, detail = failed.value.reason, failed.value.detail
        del failed  # the error's frames hold the store until then
        assert held() is None, "the store outlived its failed collection"
    finally:
        gc.enable()
    assert (reason, detail) == (
        "invalid_response",
        "more than max_stored_tasks (20) tasks held for one target and kind",
    )


def test_past_the_bound_each_collection_starts_afresh_within_it_until_the_window_is_smaller(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    api, client = gateway
    clock = [NOW]
    world = World(fillers())  # created before NOW - 200: out of the window after NOW + 800
    sync = syncing(gateway, world, clock, max_stored_tasks=20)
    first = collect(sync)
    clock[0] += 30
    arrive_finished(world, clock[0], 15, "a")
    with pytest.raises(StoreFullError):
        collect(sync)  # between full syncs: 24 tasks
    for _ in range(2):
        clock[0] += 30
        with pytest.raises(StoreFullError):
            collect(sync)
        # A full sync from nothing, whose own store obeys the bound too.
        asked = [r.params for r in api.requests if r.params.get("TaskId.0") is None]
        assert asked[-1]["BeginTime"] == str(clock[0] - LOOKBACK)
    clock[0] = NOW + 900  # the fillers have left the window: 15 tasks
    recovered = collect(sync)
    assert recovered.sync == "full"
    assert recovered.summary == full_fetch(client, clock[0])[0]
    # As after a restart: counters start again from zero, with a new _created.
    assert recovered.counts is not None and first.counts is not None
    assert recovered.counts.tasks == {"success": 0, "failure": 0}
    assert recovered.counts.created == clock[0] != first.counts.created


def test_every_task_held_counts_against_the_bound_unfinished_and_anonymous_ones_too(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    waiting = [one_url(f"w{index}", NOW - 100 - index, "wait") for index in range(6)]
    anonymous = [task(None, NOW - 50, "success", []) for _ in range(5)]
    world = World([*waiting, *anonymous])
    within = collect(syncing(gateway, world, clock, max_stored_tasks=11))
    assert within.summary.tasks_by_status["wait"] == 6
    with pytest.raises(StoreFullError):
        collect(syncing(gateway, world, clock, max_stored_tasks=10))


def test_a_finished_task_the_gateway_reopens_at_each_full_sync_is_counted_once(
    gateway: tuple[SimulatedApi, ApiClient],
) -> None:
    clock = [NOW]
    two_urls = [f"https://a.example/{name}" for name in ("x", "y")]

    def w(status: str, url_status: str) -> dict[str, Any]:
        finish = NOW - 10 if url_status in FINISHED else 0
        return task(
            "w", NOW - 60, status, [url_entry(u, url_status, NOW - 60, finish) for u in two_urls]
        )

    world = World([w("wait", "wait"), *fillers()])
    sync = syncing(gateway, world, clock, resync_seconds=0)  # every collection a full sync
    collect(sync)
    for _ in range(3):
        world.put(w("success", "success"))
        clock[0] += 30
        done = collect(sync)
        assert done.counts is not None
        assert (done.counts.tasks, done.counts.urls) == ({"success": 1, "failure": 0},
                                                         {"success": 2, "failure": 0})  # fmt: skip
        world.put(w("process", "wait"))  # which the API should never do
        clock[0] += 30
        reopened = collect(sync)
        assert reopened.summary.tasks_by_status["process"] == 1
