"""A target's tasks between collections: the finished ones as their figures, the rest whole.

A task is *finished* when its status and every one of its URLs' is ``success`` or
``failure``: the API never changes it again, so it is kept as what it adds to the
window's figures (its :class:`~exporter.summary_totals.Totals` and completion time), not
as its URLs. Unfinished tasks are kept whole, and so are tasks without a TaskId, which
cannot be asked for again. An unfinished task that ages out of the window is *stuck*:
it is kept, out of the window's figures, so that it can still be looked up until it
finishes, and it still counts as the oldest unfinished task.

The store also keeps the counters of finished work: each task and each URL counts once,
when a collection first sees it finished, except on the first collection, whose
finished work was done before the exporter looked.
"""

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from exporter.aggregate import Completion, Summarizer, SummaryLimits, TargetSummary, completion_of
from exporter.model import FINISHED, TaskInfo
from exporter.paging import TaskWindow
from exporter.summary_totals import FINISHED_RAW, STATUS_OF, Totals

_UNFINISHED_STATUSES: Final = frozenset({"wait", "process"})


def is_finished(task: TaskInfo) -> bool:
    """Whether the API will never change ``task`` again: it and all its URLs are done."""
    return task.status in FINISHED and all(url.status in FINISHED for url in task.url_lists)


def _finished_urls(task: TaskInfo) -> dict[str, int]:
    statuses = [url.status for url in task.url_lists]
    return {status: statuses.count(status) for status in FINISHED_RAW}


@dataclass(frozen=True, slots=True)
class FinishedTask:
    """What a finished task adds to the window: its figures, and when it was created."""

    create_time: int
    totals: Totals
    completion: Completion | None

    @classmethod
    def of(cls, task: TaskInfo, task_id: str, limits: SummaryLimits) -> "FinishedTask":
        """The figures of ``task``, which :func:`is_finished`."""
        totals = Totals(limits.buckets)
        totals.add_tasks([task], {})
        seconds = completion_of(task)
        completion = None if seconds is None else Completion(task.create_time, task_id, seconds)
        return cls(task.create_time, totals, completion)


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

    A collection works on a :meth:`copy` and the caller keeps it only if it succeeds, so
    a collection that fails or runs out of time changes nothing.
    """

    def __init__(self, limits: SummaryLimits, counts: FinishedCounts, *, counting: bool) -> None:
        """An empty store; ``counting`` is false on the first collection (nothing is counted)."""
        self.limits = limits
        self.counts = counts
        self.counting = counting
        self.finished: dict[str, FinishedTask] = {}
        self.unfinished: dict[str, TaskInfo] = {}  # in the window
        self.stuck: dict[str, TaskInfo] = {}  # unfinished, out of the window
        self.anonymous: list[TaskInfo] = []  # no TaskId: kept whole, never looked up
        # Whether every task can be told by its TaskId and lies in the window it came
        # from: otherwise only a full fetch gives the window's figures.
        self.exact = True
        self._totals = Totals(limits.buckets)  # of the finished tasks
        self._completions: list[Completion] = []  # of the finished tasks, newest first
        self._ages: list[tuple[int, str]] = []  # heap of the finished tasks' CreateTimes

    def copy(self) -> "TaskStore":
        """An independent copy that a collection may change."""
        clone = TaskStore(self.limits, self.counts.copy(), counting=self.counting)
        clone.finished = dict(self.finished)
        clone.unfinished = dict(self.unfinished)
        clone.stuck = dict(self.stuck)
        clone.anonymous = list(self.anonymous)
        clone.exact = self.exact
        clone._totals.add(self._totals)
        clone._completions = list(self._completions)
        clone._ages = list(self._ages)
        return clone

    def looked_up(self) -> dict[str, TaskInfo]:
        """The tasks a collection must ask for again by TaskId: every unfinished one."""
        return {**self.unfinished, **self.stuck}

    def last_sighting(self, task_id: str) -> TaskInfo | None:
        """The unfinished task ``task_id`` as last seen, if the store holds it."""
        return self.unfinished.get(task_id) or self.stuck.get(task_id)

    def add(self, task: TaskInfo, begin: int, end: int, before: "TaskStore | None") -> None:
        """Record the latest sighting of ``task``; ``before`` is what was known of it.

        ``before`` is the previous store on a full sync (which starts from an empty one),
        or None when it is this store. A task created outside ``[begin, end]`` is kept in
        the window if it came from a window's fetch (the API put it there) but makes the
        store inexact; stuck tasks come through :meth:`add_stuck`.
        """
        task_id = task.task_id
        if not task_id:
            self.anonymous.append(task)
            self.exact = False
            return
        if not begin <= task.create_time <= end:
            self.exact = False
        known = self if before is None else before
        if task_id in known.finished:
            if before is None:
                return  # finished stays finished; a full sync takes it in again
            self._count(task, task_id, None, already_finished=True)
        else:
            self._count(task, task_id, known.last_sighting(task_id), already_finished=False)
        self._place(task, task_id)

    def add_stuck(self, task: TaskInfo, before: "TaskStore | None") -> None:
        """Record a sighting of a task looked up after it left the window."""
        task_id = task.task_id
        if not task_id:
            return
        known = self if before is None else before
        self._count(task, task_id, known.last_sighting(task_id), already_finished=False)
        self.unfinished.pop(task_id, None)
        if is_finished(task):
            self.stuck.pop(task_id, None)
        else:
            self.stuck[task_id] = task

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop unfinished tasks that a lookup by TaskId no longer finds."""
        for task_id in task_ids:
            self.unfinished.pop(task_id, None)
            self.stuck.pop(task_id, None)

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

    def summary(self, window: TaskWindow) -> TargetSummary:
        """The window's figures, as a fetch of the whole window would give them.

        ``window`` is the fetch of this collection whose paging anomalies are reported.
        """
        summarizer = Summarizer(self.limits)
        summarizer.add_page([*self.unfinished.values(), *self.anonymous])
        summarizer.add_summarised(self._totals, self._completions)
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

    def _place(self, task: TaskInfo, task_id: str) -> None:
        self.stuck.pop(task_id, None)
        if not is_finished(task):
            self.unfinished[task_id] = task
            return
        self.unfinished.pop(task_id, None)
        if task_id in self.finished:
            self._remove_finished(task_id)
        done = FinishedTask.of(task, task_id, self.limits)
        self.finished[task_id] = done
        self._totals.add(done.totals)
        if done.completion is not None:
            insort(self._completions, done.completion, key=_order)
        heapq.heappush(self._ages, (done.create_time, task_id))

    def _remove_finished(self, task_id: str) -> None:
        done = self.finished.pop(task_id, None)
        if done is None:
            return
        self._totals.subtract(done.totals)
        if done.completion is not None:
            index = bisect_left(self._completions, done.completion.order, key=_order)
            del self._completions[index]

    def _count(
        self, task: TaskInfo, task_id: str, last: TaskInfo | None, *, already_finished: bool
    ) -> None:
        if not self.counting or already_finished:
            return
        now = _finished_urls(task)
        seen = _finished_urls(last) if last is not None else dict.fromkeys(FINISHED_RAW, 0)
        for status in FINISHED_RAW:
            self.counts.urls[status] += max(0, now[status] - seen[status])
        if is_finished(task) and isinstance(task.status, str):
            self.counts.tasks[task.status] += 1


def _order(completion: Completion) -> tuple[int, str]:
    return completion.order
