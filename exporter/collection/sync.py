"""Collecting one target's tasks of one kind: a full sync now and then, what changed between.

A *full sync* fetches the whole lookback window, as every collection did before the
store (:mod:`exporter.collection.store`): on the first collection, then every
``resync_seconds``. Between full syncs a collection asks only for the tasks created
since the previous one's EndTime (less ``overlap_seconds``, for tasks the gateway lists
late) and, by ``TaskId.N`` in batches, for every task the store holds unfinished; the
finished ones are final and are not asked for again. A full sync also looks up the
stuck tasks, which no window holds any more. A window whose last full sync cost no more
requests than that is fetched whole every time.

A collection between full syncs brings the store up to date in place, never copying
it, so that it costs what changed and not the window: what it read before it failed (a
request that timed out, an error) is each task's latest sighting, which the next
collection, asking from the same EndTime, takes up again. A full sync fills a new store
and replaces the old one only when it succeeds. Either way a failed or late collection
costs nothing but its own requests, and every byte it reads, pages and lookups alike,
counts against its one ``MAX_COLLECTION_BYTES`` budget. Collections of one target and kind
take turns. A collection ended by a bug of ours, or by the store passing
``max_stored_tasks``, drops the store: the next starts afresh, as after a restart (its
counters too, with a new ``_created``).
"""

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from exporter.collection.finished_counts import FinishedCounts
from exporter.collection.kinds import TaskKind
from exporter.collection.store import StoreFullError, TaskStore
from exporter.gateway.allocator import give_back_free_memory
from exporter.gateway.answers import PageTask, TaskInfo
from exporter.gateway.api_client import ApiClient
from exporter.gateway.budgets import CollectionDeadline
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.paging import TaskWindow
from exporter.settings.config import setting_default
from exporter.settings.target import Target
from exporter.summary.target_summary import TargetSummary

SyncMode = Literal["full", "incremental"]

# After a collection that read this much, free memory goes back to the system at once
# (see exporter.gateway.allocator): some 10 ms, against the seconds such a read costs.
_LARGE_COLLECTION_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class SyncOptions:
    """How far back tasks are reported and followed, and how often the window is re-read."""

    lookback_seconds: int = setting_default("lookback_seconds")
    resync_seconds: float = setting_default("resync_seconds")  # 0: a full sync every time
    overlap_seconds: int = setting_default("overlap_seconds")
    lookup_batch: int = setting_default("task_lookup_batch")
    stuck_horizon_seconds: int = setting_default("stuck_horizon_seconds")
    max_stored_tasks: int = setting_default("max_stored_tasks")


@dataclass(frozen=True)
class Collection:
    """A target's summary, when it was fetched, and what that took.

    ``counts`` are the finished-work counters as of the last collection kept.
    """

    summary: TargetSummary
    finished_at: float
    sync: SyncMode = "full"
    requests: int = 0
    last_full_sync: float | None = None
    counts: FinishedCounts | None = None


@dataclass(frozen=True)
class _State:
    store: TaskStore
    end: int  # the EndTime the store is up to date with
    full_sync_at: float  # wall-clock time of the full sync it started from
    full_requests: int  # what that full sync cost


class TaskSync:
    """Keeps one target's store of one kind of task, and collects it within a deadline."""

    def __init__(
        self,
        client: ApiClient,
        target: Target,
        kind: TaskKind,
        options: SyncOptions,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._target = target
        self._kind = kind
        self._options = options
        self._wall_clock = wall_clock
        self._state: _State | None = None
        # Held for a whole collection: one that ran out of time may still be ending when
        # the next starts, and an incremental one changes the store in place. The one
        # before ends by its deadline, which its requests' watchdog enforces.
        self._turn = threading.Lock()

    def collect(self, deadline: Deadline) -> Collection:
        """A collection: incremental if the store allows it, else a full sync."""
        with self._turn:
            # One byte budget for every request of the collection, lookups included.
            bounded = self._client.collection(deadline)
            outcome = self._collection_or_failure(bounded)
            # By now what the collection read (its pages, a half-filled store) is freed.
            if bounded.budget.used >= _LARGE_COLLECTION_BYTES:
                give_back_free_memory()
            if isinstance(outcome, ApiError):
                raise outcome.detached()  # a copy bound to no local: no reference cycle
            return outcome

    def _collection_or_failure(self, deadline: CollectionDeadline) -> Collection | ApiError:
        """The collection, or its failure free of the frames it came through."""
        try:
            return self._collect(deadline)
        except ApiError as error:
            if isinstance(error, StoreFullError):
                self._state = None  # let go of every task held, at once
            return error.detached()
        except Exception:
            self._state = None  # a bug of ours: the store may be half updated
            raise

    def _collect(self, deadline: Deadline) -> Collection:
        state = self._state
        end = int(self._wall_clock())
        if state is None or self._full_due(state, end):
            sync: SyncMode = "full"
            store, window, requests = self._full(state, end, deadline)
            full_sync_at, full_requests = self._wall_clock(), requests
        else:
            sync = "incremental"
            store, window, requests = self._incremental(state, end, deadline)
            full_sync_at, full_requests = state.full_sync_at, state.full_requests
        summary = store.summary(window)
        store.counting = True  # the first collection's finished work is not counted, later ones'
        self._state = _State(store, end, full_sync_at, full_requests)
        return Collection(
            summary, self._wall_clock(), sync, requests, full_sync_at, store.counts.copy()
        )

    def _full_due(self, state: _State, end: int) -> bool:
        options = self._options
        return (
            not state.store.exact
            or options.resync_seconds <= 0
            or self._wall_clock() - state.full_sync_at >= options.resync_seconds
            # nothing of the window the store holds is in the window any more
            or end - state.end >= options.lookback_seconds
            # A small window: fetched whole, it gives the same figures for no more requests
            # than a page of new tasks and the lookups would cost.
            or state.full_requests
            <= 1 + math.ceil(len(state.store.looked_up()) / options.lookup_batch)
        )

    def _full(
        self, state: _State | None, end: int, deadline: Deadline
    ) -> tuple[TaskStore, TaskWindow, int]:
        begin = end - self._options.lookback_seconds
        before = None if state is None else state.store
        if before is None:
            counts = FinishedCounts(self._wall_clock())
            store = TaskStore(
                self._kind.limits,
                counts,
                counting=False,
                max_tasks=self._options.max_stored_tasks,
            )
        else:
            store = before.for_full_sync()
        known = {} if before is None else before.known.by_key

        def add_page(tasks: list[PageTask]) -> None:
            store.add_page(tasks, begin, end, before)

        target = self._target
        window = self._client.fetch_tasks(
            target.project_id,
            is_dcdn=target.is_dcdn,
            begin=begin,
            end=end,
            deadline=deadline,
            on_page=add_page,
            action=self._kind.action,
            keep_tasks=False,
            known=known,
        )
        store.end_fetch()
        requests = window.requests
        if before is not None:
            # Unfinished tasks the window no longer holds: stuck, or gone.
            horizon = self._horizon(end)
            left = {
                task_id: task
                for task_id, task in before.looked_up().items()
                if horizon <= task.create_time < begin
                and task_id not in store.finished.shares
                and task_id not in store.unfinished
            }
            requests += self._look_up(store, left, (begin, end), deadline, before)
        store.prune_keys()
        return store, window, requests

    def _incremental(
        self, state: _State, end: int, deadline: Deadline
    ) -> tuple[TaskStore, TaskWindow, int]:
        options = self._options
        begin = end - options.lookback_seconds
        since = max(begin, state.end - options.overlap_seconds)
        store = state.store
        target = self._target
        window = self._client.fetch_tasks(
            target.project_id,
            is_dcdn=target.is_dcdn,
            begin=since,
            end=end,
            deadline=deadline,
            action=self._kind.action,
            known=store.known.by_key,
        )
        store.add_page(window.tasks, since, end, None)
        store.age_out(begin, self._horizon(end))
        fresh = {task.task_id for task in window.tasks}
        asked = {
            task_id: task for task_id, task in store.looked_up().items() if task_id not in fresh
        }
        requests = window.requests + self._look_up(store, asked, (begin, end), deadline, None)
        return store, window, requests

    def _look_up(
        self,
        store: TaskStore,
        tasks: Mapping[str, TaskInfo],
        window: tuple[int, int],
        deadline: Deadline,
        before: TaskStore | None,
    ) -> int:
        """Ask for ``tasks`` by TaskId, in batches, into ``store``; return the requests made.

        A task created before the ``window``'s begin is stuck; one the gateway no longer
        has is dropped.
        """
        begin, end = window
        known = (store if before is None else before).known.by_key  # read between batches
        ids = sorted(tasks)
        batch_size = self._options.lookup_batch
        requests = 0
        target = self._target
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            found_window = self._client.lookup_tasks(
                target.project_id,
                is_dcdn=target.is_dcdn,
                task_ids=batch,
                # as far back as the oldest of them: the narrowest window that holds them all
                begin=min(tasks[task_id].create_time for task_id in batch),
                end=end,
                deadline=deadline,
                action=self._kind.action,
                known=known,
            )
            requests += found_window.requests
            asked = set(batch)
            found: dict[str, TaskInfo] = {}
            for item in found_window.tasks:  # a task the gateway adds unasked is not trusted
                if item.task_id in asked and item.task_id not in found:
                    task = store.sighting(item, before)
                    if task is not None:
                        found[item.task_id] = task
            in_window = [task for task in found.values() if task.create_time >= begin]
            for task in found.values():
                if task.create_time < begin:
                    store.add_stuck(task, before)
            store.add_page(in_window, begin, end, before)
            store.forget(asked.difference(found))
        return requests

    def _horizon(self, end: int) -> int:
        return end - self._options.stuck_horizon_seconds
