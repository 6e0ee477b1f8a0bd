"""Background collection: one scheduling thread decides which target to refresh next, and a
bounded pool of threads collects them, so that a scrape only reads what is already known.

Every (target, kind) is a *job*. The scheduler starts due jobs while a collection thread
is free, in this order: jobs never collected, or whose last collection found unfinished
or new work (*active*), first; then the others (*idle*); within each, the one whose
figures are oldest first. An active job is due :data:`ACTIVE_SHARE` of the idle interval
after its last collection ended, an idle one after the idle interval: five sixths of
``max_staleness`` (the rest is the margin for the wait in line and the collection
itself), so that an idle target's figures are refreshed before they pass
``max_staleness``. A failed collection is retried as an active one is.

Under a request budget (``budget``: the requests per second the jobs may spend) the idle
jobs' refreshes are planned first, since they hold the staleness bound: the active
interval stretches, from its base up to the idle interval, until the active jobs fit in
what the idle ones leave of :data:`PLANNED_SHARE` of the budget (the rest keeps the line
of waiting requests short), each collection reckoned at what the recent ones cost.

The requests themselves are paced by the API client's rate limit, which every job, the
quota sweep and the discovery share: a collection thread waits there for its turn, so
at most ``max_threads`` collections wait at once and the rest wait here, in order. The
scheduler also calls ``on_tick`` about once a second (the quota sweep's turn).
"""

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.collection.sync import Collection
from exporter.gateway.answers import UNFINISHED

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)
# An active job is refreshed this much more often than an idle one.
ACTIVE_SHARE = 0.25
# The idle interval, as a share of max_staleness.
IDLE_SHARE = 5 / 6
# The share of the budget planned: the rest is the margin that keeps the line short.
PLANNED_SHARE = 0.9
# How much each collection's requests move the reckoning of what the next one costs.
_COST_WEIGHT = 0.05
# The longest the scheduler sleeps without a reason to wake (on_tick's cadence).
_TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Refresh:
    """How one collection of a job went: its figures (None: it failed) and its duration."""

    collection: Collection | None
    seconds: float
    failure_reason: str | None = None


@dataclass(frozen=True)
class JobState:
    """What a scrape publishes for a job: its last good figures and its last attempt."""

    good: Collection | None  # the last successful collection's
    last: Refresh | None  # the last finished attempt; None: none has finished yet
    active: bool


@dataclass
class _Job:
    """A job's schedule and results (mutable, under the planner's lock)."""

    good: Collection | None = None
    last: Refresh | None = None
    active: bool = True  # nothing known yet: as urgent as work under way
    running: bool = False
    finished_at: float = -math.inf  # monotonic end of the last attempt
    good_at: float = -math.inf  # monotonic end of the last success
    refreshes: int = 0  # collections started, for the record of what each kind costs


def is_active(collection: Collection, before: Collection | None) -> bool:
    """Whether ``collection`` found work under way: an unfinished task, or tasks that the
    previous collection (``before``) did not count the same."""
    summary = collection.summary
    if any(summary.tasks_by_status[status] for status in UNFINISHED):
        return True
    return before is None or before.summary.tasks_by_status != summary.tasks_by_status


class Planner(Generic[K]):
    """Refreshes every job in the background, in order of need, ``max_threads`` at a time.

    ``collect(key)`` runs one collection of a job and says how it went; it must not
    raise. ``clock`` is monotonic. :meth:`start` starts the scheduler, :meth:`close`
    stops it (collections under way end by their own deadlines).
    """

    def __init__(
        self,
        collect: Callable[[K], Refresh],
        *,
        max_staleness: float,
        max_threads: int,
        on_tick: Callable[[], None] | None = None,
        budget: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_staleness <= 0 or max_threads < 1:
            raise ValueError("max_staleness must be > 0 and max_threads >= 1")
        self._collect = collect
        self._idle_interval = max_staleness * IDLE_SHARE
        self._base_active_interval = self._idle_interval * ACTIVE_SHARE
        self._active_interval = self._base_active_interval
        self._budget = budget
        self._cost = 1.0  # requests per collection, as recent ones cost
        self._max_threads = max_threads
        self._on_tick = on_tick
        self._clock = clock
        self._jobs: dict[K, _Job] = {}
        self._running = 0
        self._closed = False
        self._wake = threading.Condition()
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix="collect")
        self._scheduler = threading.Thread(target=self._schedule, name="planner", daemon=True)

    @property
    def idle_interval(self) -> float:
        """Seconds between the refreshes of an idle job."""
        return self._idle_interval

    @property
    def active_interval(self) -> float:
        """Seconds between the refreshes of an active (or failed) job, as last planned."""
        with self._wake:
            return self._active_interval

    def start(self) -> None:
        """Start the scheduling thread."""
        self._scheduler.start()

    def close(self) -> None:
        """Start nothing more; collections under way end by their deadlines."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def follow(self, keys: Iterable[K]) -> None:
        """The jobs from now on: a new one is collected first (new ones in the order given),
        one that went is dropped."""
        wanted = dict.fromkeys(keys)  # in the order given: the order of jobs never collected
        with self._wake:
            for key in [key for key in self._jobs if key not in wanted]:
                del self._jobs[key]
            for key in wanted:
                self._jobs.setdefault(key, _Job())
            self._wake.notify_all()

    def state(self, key: K) -> JobState | None:
        """What is known of ``key`` now (None: not a job)."""
        with self._wake:
            job = self._jobs.get(key)
            if job is None:
                return None
            return JobState(job.good, job.last, job.active)

    def refreshes(self, key: K) -> int:
        """Collections of ``key`` started so far."""
        with self._wake:
            job = self._jobs.get(key)
            return 0 if job is None else job.refreshes

    def running(self) -> int:
        """Collections under way now (at most ``max_threads``)."""
        with self._wake:
            return self._running

    def demand(self) -> float:
        """The requests per second every job would spend at the base intervals, each
        collection reckoned at what the recent ones cost."""
        with self._wake:
            active = sum(1 for job in self._jobs.values() if job.active)
            idle = len(self._jobs) - active
            return self._cost * (active / self._base_active_interval + idle / self._idle_interval)

    def due_order(self) -> list[K]:
        """The jobs due now, in the order they are started."""
        with self._wake:
            return self._due(self._clock())

    def _due(self, now: float) -> list[K]:
        """Due jobs, most needed first (under the lock)."""
        due = [
            (0 if job.active else 1, job.good_at, index, key)
            for index, (key, job) in enumerate(self._jobs.items())
            if not job.running and now >= self._due_at(job)
        ]
        due.sort(key=lambda item: item[:3])
        return [item[3] for item in due]

    def _due_at(self, job: _Job) -> float:
        interval = self._active_interval if job.active else self._idle_interval
        return job.finished_at + interval

    def _schedule(self) -> None:
        next_tick = self._clock()
        while True:
            with self._wake:
                if self._closed:
                    return
                now = self._clock()
                self._active_interval = self._planned_active_interval()
                for key in self._due(now)[: self._max_threads - self._running]:
                    self._begin(key)
                self._wake.wait(self._sleep_seconds(now, next_tick))
            if self._on_tick is not None and self._clock() >= next_tick:
                next_tick = self._clock() + _TICK_SECONDS
                self._tick()

    def _planned_active_interval(self) -> float:
        """The active interval that fits the budget once the idle jobs have their share
        (under the lock): the base one when the budget allows, the idle one at most."""
        rate = self._budget() if self._budget is not None else 0.0
        active = sum(1 for job in self._jobs.values() if job.active)
        if rate <= 0 or not active:
            return self._base_active_interval
        idle = len(self._jobs) - active
        # collections a second left
        room = PLANNED_SHARE * rate / self._cost - idle / self._idle_interval
        if room <= 0:
            return self._idle_interval
        return min(self._idle_interval, max(self._base_active_interval, active / room))

    def _sleep_seconds(self, now: float, next_tick: float) -> float:
        """Until the next job is due, or the next tick (under the lock). With every
        thread busy, only a job's end (which notifies) or the tick can start another."""
        sleeps = [_TICK_SECONDS]
        if self._on_tick is not None:
            sleeps.append(next_tick - now)
        if self._running < self._max_threads:
            sleeps.extend(self._due_at(j) - now for j in self._jobs.values() if not j.running)
        return max(0.0, min(sleeps))

    def _tick(self) -> None:
        assert self._on_tick is not None
        try:
            self._on_tick()
        except Exception:  # a bug there must not stop the collections
            log.exception("the planner's periodic work failed")

    def _begin(self, key: K) -> None:
        """Mark ``key`` running and hand it to a collection thread (under the lock)."""
        job = self._jobs[key]
        job.running = True
        job.refreshes += 1
        self._running += 1
        try:
            self._pool.submit(self._run, key)
        except RuntimeError:  # closed meanwhile: nothing more starts
            job.running = False
            self._running -= 1

    def _run(self, key: K) -> None:
        refresh = Refresh(None, 0.0, "internal_error")
        try:
            refresh = self._collect(key)
        except Exception:  # the collect function's contract is not to raise
            log.exception("background collection failed unexpectedly")
        with self._wake:
            self._running -= 1
            job = self._jobs.get(key)
            if job is not None:  # else it went while collected: its result is dropped
                self._finish(job, refresh)
            self._wake.notify_all()

    def _finish(self, job: _Job, refresh: Refresh) -> None:
        now = self._clock()
        job.running = False
        job.finished_at = now
        job.last = refresh
        if refresh.collection is None:
            job.active = True  # retried soon, as work under way is
            return
        self._cost += _COST_WEIGHT * (max(1, refresh.collection.requests) - self._cost)
        job.active = is_active(refresh.collection, job.good)
        job.good = refresh.collection
        job.good_at = now
