"""The planner's order of refresh, its intervals and its bound on threads.

A real planner with its real scheduling thread and pool; the clock it plans by is the
test's, so that "due" is exact; the collections are the test's own function, which
records the order it is called in and answers as a target with or without work under
way would.
"""

import threading
import time
from collections.abc import Iterator

import pytest

from exporter.collection.planner import (
    ACTIVE_SHARE,
    IDLE_SHARE,
    PLANNED_SHARE,
    Planner,
    Refresh,
    is_active,
)
from exporter.collection.sync import Collection
from exporter.gateway.answers import STATUSES
from exporter.summary.target_summary import TargetSummary

STALENESS = 60.0
WAIT_SECONDS = 5.0


def summary(unfinished: int = 0, finished: int = 5) -> TargetSummary:
    tasks = dict.fromkeys(STATUSES, 0) | {"success": finished, "process": unfinished}
    return TargetSummary(tasks, dict(tasks), [], 0, {}, [], None, {})


class World:
    """The collections the planner asks for: each key answers as the test says."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []
        self.unfinished: dict[str, int] = {}
        self.failing: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold = threading.Event()
        self.hold.set()
        self.planner: Planner[str] | None = None

    def clock(self) -> float:
        return self.now

    def collect(self, key: str) -> Refresh:
        with self.lock:
            self.calls.append(key)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.hold.wait(WAIT_SECONDS)
        with self.lock:
            self.in_flight -= 1
        if key in self.failing:
            return Refresh(None, 0.01, "api_error")
        return Refresh(Collection(summary(self.unfinished.get(key, 0)), 1.0), 0.01)

    def wait_calls(self, count: int) -> list[str]:
        give_up = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < give_up:
            with self.lock:
                calls = list(self.calls)
            # Ended, and their ends recorded by the planner: its clock is the test's.
            if len(calls) >= count and self.planner is not None and self.planner.running() == 0:
                return calls
            time.sleep(0.005)
        raise AssertionError(f"{len(self.calls)} collections, not {count}: {self.calls}")


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def planner(world: World) -> Iterator[Planner[str]]:
    planner = Planner(world.collect, max_staleness=STALENESS, max_threads=1, clock=world.clock)
    world.planner = planner
    yield planner
    planner.close()


def advance(world: World, planner: Planner[str], seconds: float) -> None:
    world.now += seconds
    planner.follow(planner_keys(planner))  # wakes the scheduler, changes nothing


def planner_keys(planner: Planner[str]) -> list[str]:
    return [key for key in ("a", "b", "c", "d", "z") if planner.state(key) is not None]


def test_the_intervals_follow_the_staleness_bound(planner: Planner[str]) -> None:
    assert planner.idle_interval == pytest.approx(STALENESS * IDLE_SHARE)
    assert planner.idle_interval < STALENESS
    assert planner.active_interval == pytest.approx(planner.idle_interval * ACTIVE_SHARE)


def test_active_targets_come_before_idle_ones_then_the_stalest(
    world: World, planner: Planner[str]
) -> None:
    world.unfinished = {"b": 2, "d": 1}
    world.failing = {"c"}
    planner.follow(["a", "b", "c", "d"])
    planner.start()
    assert world.wait_calls(4) == ["a", "b", "c", "d"]  # none collected yet: as listed
    # Past the active interval: after one collection every success is new work, so all
    # are active; the failed "c" has no figures at all, the stalest, and goes first.
    advance(world, planner, planner.active_interval)
    assert world.wait_calls(8)[4:] == ["c", "a", "b", "d"]
    # Now "a" (nothing unfinished, nothing new) is idle; "b" and "d" have work under way,
    # "c" still fails. Past the active interval, only those three are due: "a" is not.
    advance(world, planner, planner.active_interval)
    assert world.wait_calls(11)[8:] == ["c", "b", "d"]
    assert planner.due_order() == []
    # Past the idle interval, everything is due: the active ones first, stalest first
    # ("c" has never succeeded), then the idle one.
    advance(world, planner, planner.idle_interval)
    assert world.wait_calls(15)[11:] == ["c", "b", "d", "a"]


def test_a_new_target_is_collected_first(world: World, planner: Planner[str]) -> None:
    world.hold.clear()  # the first collection holds the only thread
    planner.follow(["a", "b"])
    planner.start()
    give_up = time.monotonic() + WAIT_SECONDS
    while not world.calls and time.monotonic() < give_up:
        time.sleep(0.005)
    advance(world, planner, STALENESS)
    planner.follow(["a", "b", "z"])
    assert planner.due_order() == ["b", "z"]  # both never collected: as listed
    world.unfinished = {}
    world.hold.set()
    assert world.wait_calls(3) == ["a", "b", "z"]
    planner.follow(["z"])  # the others went: dropped, their results with them
    assert planner.state("a") is None
    assert planner.state("z") is not None


def test_an_idle_target_is_refreshed_within_the_staleness_bound(
    world: World, planner: Planner[str]
) -> None:
    planner.follow(["a"])
    planner.start()
    world.wait_calls(1)
    advance(world, planner, planner.active_interval)
    world.wait_calls(2)  # unchanged now: idle
    state = planner.state("a")
    assert state is not None and not state.active
    advance(world, planner, planner.idle_interval - 1)
    time.sleep(0.1)
    assert world.calls == ["a", "a"]
    advance(world, planner, 1)
    assert world.wait_calls(3) == ["a", "a", "a"]
    assert planner.refreshes("a") == 3


def test_collections_at_once_are_bounded_by_the_threads_not_the_targets(world: World) -> None:
    before = set(threading.enumerate())
    planner = Planner(world.collect, max_staleness=STALENESS, max_threads=4, clock=world.clock)
    world.planner = planner
    try:
        world.hold.clear()
        planner.follow([f"t{index}" for index in range(200)])
        planner.start()
        give_up = time.monotonic() + WAIT_SECONDS
        while planner.running() < 4 and time.monotonic() < give_up:
            time.sleep(0.005)
        time.sleep(0.05)
        assert planner.running() == 4
        world.hold.set()
        world.wait_calls(200)
        assert world.most_in_flight == 4
        started = [t for t in threading.enumerate() if t not in before]
        assert len(started) <= 4 + 1  # the pool and the scheduling thread
    finally:
        planner.close()


def test_work_under_way_or_new_makes_a_target_active() -> None:
    quiet = Collection(summary(0, 5), 1.0)
    assert is_active(quiet, None)  # the first look: everything is new
    assert not is_active(Collection(summary(0, 5), 2.0), quiet)
    assert is_active(Collection(summary(0, 6), 2.0), quiet)  # a new task
    assert is_active(Collection(summary(1, 5), 2.0), quiet)  # one under way


def test_a_bug_in_a_collection_costs_that_target_only(world: World) -> None:
    def collect(key: str) -> Refresh:
        if key == "bad":
            raise RuntimeError("a bug")
        return world.collect(key)

    planner = Planner(collect, max_staleness=STALENESS, max_threads=1, clock=world.clock)
    world.planner = planner
    try:
        planner.follow(["bad", "good"])
        planner.start()
        world.wait_calls(1)
        give_up = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < give_up:
            state = planner.state("bad")
            if state is not None and state.last is not None:
                break
            time.sleep(0.005)
        state = planner.state("bad")
        assert state is not None and state.last is not None
        assert state.last.failure_reason == "internal_error"
        assert state.good is None
    finally:
        planner.close()


def test_a_tight_budget_stretches_the_active_interval_so_idle_targets_keep_the_bound(
    world: World,
) -> None:
    budget = [1.0]
    planner = Planner(
        world.collect,
        max_staleness=STALENESS,
        max_threads=1,
        budget=lambda: budget[0],
        clock=world.clock,
    )
    world.planner = planner
    keys = [f"t{index}" for index in range(10)]
    world.unfinished = {"t0": 1, "t1": 1}  # two active, eight idle after their second look
    try:
        planner.follow(keys)
        planner.start()
        world.wait_calls(10)
        world.now += STALENESS  # everything due again
        budget[0] = 1000.0
        planner.follow(keys)
        world.wait_calls(20)
        base = planner.idle_interval * ACTIVE_SHARE
        idle_need = 8 / planner.idle_interval  # collections a second, one request each

        def planned(rate: float) -> float:
            budget[0] = rate
            planner.follow(keys)  # a scheduling pass
            give_up = time.monotonic() + WAIT_SECONDS
            room = PLANNED_SHARE * rate - idle_need
            expected = min(planner.idle_interval, max(base, 2 / room))
            while planner.active_interval != pytest.approx(expected):
                assert time.monotonic() < give_up, (rate, planner.active_interval, expected)
                time.sleep(0.005)
            return planner.active_interval

        assert planned(1000.0) == pytest.approx(base)  # room for every active job
        assert base < planned((idle_need + 0.1) / PLANNED_SHARE) < planner.idle_interval
        assert planned((idle_need + 0.01) / PLANNED_SHARE) == pytest.approx(planner.idle_interval)
    finally:
        planner.close()
