"""A target's tasks between collections: the finished ones as their figures, the rest whole.

A task is *finished* when its status and every one of its URLs' is ``success`` or
``failure``: the API never changes it again, so it is kept as what it adds to the
window's figures (a :class:`~exporter.collection.finished.FinishedShare`), not as its URLs.
Unfinished tasks are kept whole, and so are tasks without a TaskId, which cannot be
asked for again. An unfinished task that ages out of the window is *stuck*:
it is kept, out of the window's figures, so that it can still be looked up until it
finishes, and it still counts as the oldest unfinished task.

The store also keeps the counters of finished work: each task and each URL counts once,
when a collection first sees it finished, except on the first collection, whose
finished work was done before the exporter looked.
"""

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Final

from exporter.collection.finished import FinishedShare, add_finished
from exporter.gateway.answers import FINISHED, PageTask, TaskInfo
from exporter.gateway.paging import TaskWindow
from exporter.summary.target_summary import Completion, Summarizer, SummaryLimits, TargetSummary
from exporter.summary.totals import FINISHED_RAW, STATUS_OF, Totals

_UNFINISHED_STATUSES: Final = frozenset({"wait", "process"})
_STATUS: Final = attrgetter("status")
# Completions newest first: a page's, added together, are sorted once.
_SORT_AT_ONCE: Final = 8


def is_finished(task: TaskInfo) -> bool:
    """Whether the API will never change ``task`` again: it and all its URLs are done."""
    return task.status in FINISHED and FINISHED.issuperset(map(_STATUS, task.url_lists))


def _finished_urls(task: TaskInfo) -> dict[str, int]:
    statuses = [url.status for url in task.url_lists]
    return {status: statuses.count(status) for status in FINISHED_RAW}


@dataclass
class FinishedCounts:
    """URLs and tasks first seen finished since the store began, by status."""

    created: float
    urls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_RAW, 0))
    tasks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_RAW, 0))

    def copy(self) -> "FinishedCounts":
        """An independent copy, for a collection that may not be committed."""
        return FinishedCounts(self.created, dict(self.urls), dict(self.tasks))


class TaskStore:
    """One target's tasks of one kind, as of its last collection.

    A collection between full syncs updates it in place: each sighting it records is the
    task's latest, so a collection that fails half way leaves a store that the next one
    brings up to date. A full sync fills a :meth:`for_full_sync` copy instead, which it
    reads against this store.
    """

    def __init__(self, limits: SummaryLimits, counts: FinishedCounts, *, counting: bool) -> None:
        """An empty store; ``counting`` is false on the first collection (nothing is counted)."""
        self.limits = limits
        self.counts = counts
        self.counting = counting
        self.finished: dict[str, FinishedShare] = {}
        self.unfinished: dict[str, TaskInfo] = {}  # in the window
        self.stuck: dict[str, TaskInfo] = {}  # unfinished, out of the window
        self.anonymous: list[TaskInfo] = []  # no TaskId: kept whole, never looked up
        # Whether every task can be told by its TaskId and lies in the window it came
        # from: otherwise only a full fetch gives the window's figures.
        self.exact = True
        self._totals = Totals(limits.buckets)  # of the finished tasks
        self._completions: list[Completion] = []  # of the finished tasks, newest first
        self._completions_sorted = True  # or not yet: see _newest_completions
        self._ages: list[tuple[int, str]] = []  # heap of the finished tasks' CreateTimes
        # The keys (hashes of their JSON, see exporter.gateway.answers.decode_tasks) of the tasks
        # held by TaskId, so that a fetch need not decode those that come back unchanged.
        self.keys: dict[int, str] = {}
        self._key_of: dict[str, int] = {}
        # On a full sync, the finished tasks carried over that its fetch has not yet seen.
        self._unseen: set[str] = set()

    def copy(self) -> "TaskStore":
        """An independent copy that a later collection may change: it counts."""
        clone = TaskStore(self.limits, self.counts.copy(), counting=True)
        clone.finished = dict(self.finished)
        clone.unfinished = dict(self.unfinished)
        clone.stuck = dict(self.stuck)
        clone.anonymous = list(self.anonymous)
        clone.exact = self.exact
        clone._totals.add(self._totals)
        clone._completions = list(self._newest_completions())
        clone._ages = list(self._ages)
        clone.keys = dict(self.keys)
        clone._key_of = dict(self._key_of)
        return clone

    def for_full_sync(self) -> "TaskStore":
        """A copy for a full sync to fill: its finished tasks carried over until the fetch
        shows whether each is still in the window (see :meth:`end_fetch`), the others to be
        seen again. A finished task that comes back unchanged costs nothing more."""
        clone = self.copy()
        clone.unfinished, clone.stuck, clone.anonymous = {}, {}, []
        clone.exact = True
        clone._unseen = set(clone.finished)
        return clone

    def end_fetch(self) -> None:
        """The full sync's fetch is in: drop the finished tasks it did not see again."""
        for task_id in self._unseen:
            self._remove_finished(task_id)
        self._unseen = set()

    def prune_keys(self) -> None:
        """Forget the keys of tasks no longer held: after a full sync, which held its
        unfinished ones only until it saw them again (a dropped task's key goes with it)."""
        held = self._key_of.keys() & {*self.finished, *self.unfinished, *self.stuck}
        self._key_of = {task_id: self._key_of[task_id] for task_id in held}
        self.keys = {key: task_id for task_id, key in self._key_of.items()}

    def sighting(self, task: PageTask, before: "TaskStore | None") -> TaskInfo | None:
        """``task`` as a TaskInfo: a known one as held; None for a known finished one."""
        if isinstance(task, TaskInfo):
            return task
        held = (self if before is None else before).last_sighting(task.task_id)
        if held is None and task.task_id not in self.finished:
            raise LookupError("a known task the store does not hold")  # a bug, not the API's
        return held

    def looked_up(self) -> dict[str, TaskInfo]:
        """The tasks a collection must ask for again by TaskId: every unfinished one."""
        return {**self.unfinished, **self.stuck}

    def last_sighting(self, task_id: str) -> TaskInfo | None:
        """The unfinished task ``task_id`` as last seen, if the store holds it."""
        return self.unfinished.get(task_id) or self.stuck.get(task_id)

    def add_page(
        self, tasks: Sequence[PageTask], begin: int, end: int, before: "TaskStore | None"
    ) -> None:
        """Record the latest sighting of each of ``tasks``; ``before`` is what was known.

        ``before`` is the previous store on a full sync (this store is then its
        :meth:`for_full_sync`), or None when it is this store. A task created outside
        ``[begin, end]`` is kept in the window if it came from a window's fetch (the API
        put it there) but makes the store inexact; stuck tasks come through
        :meth:`add_stuck`. The page's finished tasks are summed up together.
        """
        known = self if before is None else before
        done: dict[str, TaskInfo] = {}
        for item in tasks:
            task = self.sighting(item, before)
            if task is None:  # finished, and unchanged
                self._see_finished(item, begin, end)
                continue
            task_id = task.task_id
            if not task_id:
                self.anonymous.append(task)
                self.exact = False
                continue
            if not begin <= task.create_time <= end:
                self.exact = False
            if self.unfinished.get(task_id) is task:
                # Back unchanged and held as it is (a steady collection's lookups, mostly):
                # nothing to count or move, and its URLs need not be walked again.
                done.pop(task_id, None)
                continue
            if task_id in known.finished:
                if before is None:
                    continue  # finished stays finished; a full sync takes it in again
                self._count(task, task_id, None, already_finished=True)
            else:
                self._count(task, task_id, known.last_sighting(task_id), already_finished=False)
            if task_id in self._unseen:  # changed since: the API should not do that
                self._unseen.discard(task_id)
                self._remove_finished(task_id)
            self._remember(task_id, task.key)
            self.stuck.pop(task_id, None)
            if is_finished(task):
                self.unfinished.pop(task_id, None)
                done[task_id] = task
            else:
                done.pop(task_id, None)
                self.unfinished[task_id] = task
        self._add_finished(done)

    def add_stuck(self, task: TaskInfo, before: "TaskStore | None") -> None:
        """Record a sighting of a task looked up after it left the window."""
        task_id = task.task_id
        if not task_id:
            return
        known = self if before is None else before
        self._count(task, task_id, known.last_sighting(task_id), already_finished=False)
        self._remember(task_id, task.key)
        self.unfinished.pop(task_id, None)
        if is_finished(task):
            self.stuck.pop(task_id, None)
            self._drop_key(task_id)
        else:
            self.stuck[task_id] = task

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop unfinished tasks that a lookup by TaskId no longer finds."""
        for task_id in task_ids:
            self.unfinished.pop(task_id, None)
            self.stuck.pop(task_id, None)
            self._drop_key(task_id)

    def age_out(self, begin: int, horizon: int) -> None:
        """Drop finished tasks created before ``begin``; unfinished ones become stuck,
        and stuck ones created before ``horizon`` are given up."""
        while self._ages and self._ages[0][0] < begin:
            created, task_id = heapq.heappop(self._ages)
            done = self.finished.get(task_id)
            if done is not None and done.create_time == created:
                self._remove_finished(task_id)
        for task_id, task in list(self.unfinished.items()):
            if task.create_time < begin:
                del self.unfinished[task_id]
                self.stuck[task_id] = task
        for task_id, task in list(self.stuck.items()):
            if task.create_time < horizon:
                del self.stuck[task_id]
                self._drop_key(task_id)

    def summary(self, window: TaskWindow) -> TargetSummary:
        """The window's figures, as a fetch of the whole window would give them.

        ``window`` is the fetch of this collection whose paging anomalies are reported.
        """
        summarizer = Summarizer(self.limits)
        summarizer.add_page([*self.unfinished.values(), *self.anonymous])
        summarizer.add_summarised(self._totals, self._newest_completions())
        summary = summarizer.summary(window)
        stuck = [
            task.create_time
            for task in self.stuck.values()
            if task.create_time > 0 and STATUS_OF.get(task.status) in _UNFINISHED_STATUSES
        ]
        if stuck:
            window_oldest = summary.oldest_unfinished_created
            summary.oldest_unfinished_created = min(
                stuck if window_oldest is None else [*stuck, window_oldest]
            )
        return summary

    def _see_finished(self, item: PageTask, begin: int, end: int) -> None:
        task_id = item.task_id or ""  # a known task always has one
        self._unseen.discard(task_id)
        if not begin <= self.finished[task_id].create_time <= end:
            self.exact = False

    def _remember(self, task_id: str, key: int) -> None:
        if not key or type(key) is not int or self._key_of.get(task_id) == key:  # 0: not set
            return
        self._drop_key(task_id)
        self.keys[key] = task_id
        self._key_of[task_id] = key

    def _drop_key(self, task_id: str) -> None:
        key = self._key_of.pop(task_id, None)
        if key is not None and self.keys.get(key) == task_id:
            del self.keys[key]

    def _add_finished(self, tasks: dict[str, TaskInfo]) -> None:
        shares = add_finished(self._totals, list(tasks.values()), list(tasks))
        completions = self._completions
        for task_id, share in zip(tasks, shares, strict=True):
            self.finished[task_id] = share
            heapq.heappush(self._ages, (share.create_time, task_id))
            if share.completion is None:
                continue
            if len(shares) > _SORT_AT_ONCE:
                completions.append(share.completion)
                self._completions_sorted = False
            else:
                insort(completions, share.completion, key=_order)

    def _newest_completions(self) -> list[Completion]:
        if not self._completions_sorted:
            self._completions.sort(key=_order)
            self._completions_sorted = True
        return self._completions

    def _remove_finished(self, task_id: str) -> None:
        done = self.finished.pop(task_id, None)
        if done is None:
            return
        self._drop_key(task_id)
        self._totals.subtract(done.totals(self.limits.buckets))
        if done.completion is not None:
            completions = self._newest_completions()
            del completions[bisect_left(completions, done.completion.order, key=_order)]

    def _count(
        self, task: TaskInfo, task_id: str, last: TaskInfo | None, *, already_finished: bool
    ) -> None:
        if not self.counting or already_finished or task is last:  # unchanged: nothing new
            return
        now = _finished_urls(task)
        seen = _finished_urls(last) if last is not None else dict.fromkeys(FINISHED_RAW, 0)
        for status in FINISHED_RAW:
            self.counts.urls[status] += max(0, now[status] - seen[status])
        if is_finished(task) and isinstance(task.status, str):
            self.counts.tasks[task.status] += 1


def _order(completion: Completion) -> tuple[int, str]:
    return completion.order
