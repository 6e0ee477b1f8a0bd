"""A target's tasks between collections: the finished ones as their figures, the rest whole.

A finished task (:func:`~exporter.collection.finished.is_finished`) never changes again,
so it is kept as what it adds to the window's figures
(:class:`~exporter.collection.finished.FinishedTasks`), not as its URLs. Unfinished tasks
are kept whole, and so are tasks without a TaskId, which cannot be asked for again. An
unfinished task that ages out of the window is *stuck*: it is kept, out of the window's
figures, so that it can still be looked up until it finishes, and it still counts as the
oldest unfinished task.

The store composes the parts that keep the rest: the keys of the tasks it holds
(:class:`~exporter.collection.known_tasks.KnownTasks`) and the counters of finished work
(:class:`~exporter.collection.finished_counts.FinishedCounts`).

A store holds at most ``max_tasks`` tasks (``MAX_STORED_TASKS``), whatever their kind: a
collection's bytes are capped, but a gateway adding tasks faster than they leave the
window would grow the store from one collection to the next. Held tasks are counted,
not weighed: a count costs nothing to keep and is what an operator knows of an account
(tasks a day); docs/operating.md gives what a task costs in memory. Passing the bound
raises :class:`StoreFullError`, and the store is then dropped whole.
"""

from collections.abc import Iterable, Sequence
from typing import Final

from exporter.collection.finished import FinishedTasks, is_finished
from exporter.collection.finished_counts import FinishedCounts
from exporter.collection.known_tasks import KnownTasks
from exporter.gateway.answers import PageTask, TaskInfo
from exporter.gateway.outcomes import ApiError
from exporter.gateway.paging import TaskWindow
from exporter.settings.config import setting_default
from exporter.summary.target_summary import Summarizer, SummaryLimits, TargetSummary
from exporter.summary.totals import STATUS_OF

_UNFINISHED_STATUSES: Final = frozenset({"wait", "process"})


class StoreFullError(ApiError):
    """A collection would leave the store holding more tasks than its bound.

    The collection fails like one whose answers are too large (``invalid_response``), and
    its store is dropped: the next collection starts afresh with a full sync.
    """

    def __init__(self, max_tasks: int) -> None:
        super().__init__(
            "invalid_response",
            f"more than max_stored_tasks ({max_tasks}) tasks held for one target and kind",
        )


class TaskStore:
    """One target's tasks of one kind, as of its last collection.

    A collection between full syncs updates it in place: each sighting it records is the
    task's latest, so a collection that fails half way leaves a store that the next one
    brings up to date. A full sync fills a :meth:`for_full_sync` copy instead, which it
    reads against this store.
    """

    def __init__(
        self,
        limits: SummaryLimits,
        counts: FinishedCounts,
        *,
        counting: bool,
        max_tasks: int = setting_default("max_stored_tasks"),
    ) -> None:
        """An empty store; ``counting`` is false on the first collection (nothing is counted)."""
        self.limits = limits
        self.max_tasks = max_tasks
        self.counts = counts
        self.counting = counting
        self.finished = FinishedTasks(limits.buckets)
        self.unfinished: dict[str, TaskInfo] = {}  # in the window
        self.stuck: dict[str, TaskInfo] = {}  # unfinished, out of the window
        self.anonymous: list[TaskInfo] = []  # no TaskId: kept whole, never looked up
        self.known = KnownTasks()  # of the tasks held by TaskId
        # Whether every task can be told by its TaskId and lies in the window it came
        # from: otherwise only a full fetch gives the window's figures.
        self.exact = True
        # On a full sync, the finished tasks carried over that its fetch has not yet seen.
        self._unseen: set[str] = set()

    def for_full_sync(self) -> "TaskStore":
        """A copy for a full sync to fill: its finished tasks carried over until the fetch
        shows whether each is still in the window (see :meth:`end_fetch`), the others to be
        seen again. A finished task that comes back unchanged costs nothing more."""
        clone = TaskStore(self.limits, self.counts.copy(), counting=True, max_tasks=self.max_tasks)
        clone.finished = self.finished.copy()
        clone.known = self.known.copy()
        clone._unseen = set(clone.finished.shares)
        return clone

    def end_fetch(self) -> None:
        """The full sync's fetch is in: drop the finished tasks it did not see again."""
        for task_id in self._unseen:
            self._remove_finished(task_id)
        self._unseen = set()

    def prune_keys(self) -> None:
        """Forget the keys (and reopened counts) of tasks no longer held: after a full sync,
        which held its unfinished ones only until it saw them again."""
        held = {*self.finished.shares, *self.unfinished, *self.stuck}
        self.known.keep_only(held)
        reopened = self.counts.reopened
        if reopened:
            self.counts.reopened = {key: urls for key, urls in reopened.items() if key in held}

    @property
    def held(self) -> int:
        """How many tasks the store holds, of every kind."""
        return (
            len(self.finished.shares) + len(self.unfinished) + len(self.stuck) + len(self.anonymous)
        )

    def sighting(self, task: PageTask, before: "TaskStore | None") -> TaskInfo | None:
        """``task`` as a TaskInfo: a known one as held; None for a known finished one."""
        if isinstance(task, TaskInfo):
            return task
        held = (self if before is None else before).last_sighting(task.task_id)
        if held is None and task.task_id not in self.finished.shares:
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
            if task_id in known.finished.shares:
                if before is None:
                    continue  # finished stays finished; a full sync takes it in again
            elif self.counting:
                self.counts.count(task, known.last_sighting(task_id))
            if task_id in self._unseen:  # changed since: the API should not do that
                self._unseen.discard(task_id)
                if not is_finished(task):
                    self.counts.reopen(task_id, self.finished.urls_of(task_id))
                self._remove_finished(task_id)
            self.known.remember(task_id, task.key)
            self.stuck.pop(task_id, None)
            if is_finished(task):
                self.unfinished.pop(task_id, None)
                done[task_id] = task
            else:
                done.pop(task_id, None)
                self.unfinished[task_id] = task
        self.finished.add(done)
        self._within_bound()

    def add_stuck(self, task: TaskInfo, before: "TaskStore | None") -> None:
        """Record a sighting of a task looked up after it left the window."""
        task_id = task.task_id
        if not task_id:
            return
        if self.counting:
            self.counts.count(task, (self if before is None else before).last_sighting(task_id))
        self.known.remember(task_id, task.key)
        self.unfinished.pop(task_id, None)
        if is_finished(task):
            self.stuck.pop(task_id, None)
            self.known.forget(task_id)
        else:
            self.stuck[task_id] = task
            self._within_bound()

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop unfinished tasks that a lookup by TaskId no longer finds."""
        for task_id in task_ids:
            self.unfinished.pop(task_id, None)
            self.stuck.pop(task_id, None)
            self.known.forget(task_id)

    def age_out(self, begin: int, horizon: int) -> None:
        """Drop finished tasks created before ``begin``; unfinished ones become stuck,
        and stuck ones created before ``horizon`` are given up."""
        for task_id in self.finished.created_before(begin):
            self._remove_finished(task_id)
        for task_id, task in list(self.unfinished.items()):
            if task.create_time < begin:
                del self.unfinished[task_id]
                self.stuck[task_id] = task
        for task_id, task in list(self.stuck.items()):
            if task.create_time < horizon:
                del self.stuck[task_id]
                self.known.forget(task_id)

    def summary(self, window: TaskWindow) -> TargetSummary:
        """The window's figures, as a fetch of the whole window would give them.

        ``window`` is the fetch of this collection whose paging anomalies are reported.
        """
        summarizer = Summarizer(self.limits)
        summarizer.add_page([*self.unfinished.values(), *self.anonymous])
        newest = self.finished.newest_completions(self.limits.max_task_series)
        summarizer.add_summarised(self.finished.totals, newest)
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

    def _within_bound(self) -> None:
        """Fail the collection once the store holds more than ``max_tasks`` tasks: checked
        after each page of a full sync (its tasks carried over count) and after the new
        tasks of a collection between full syncs, which ``MAX_COLLECTION_BYTES`` bounds."""
        if self.held > self.max_tasks:
            raise StoreFullError(self.max_tasks)

    def _see_finished(self, item: PageTask, begin: int, end: int) -> None:
        task_id = item.task_id or ""  # a known task always has one
        self._unseen.discard(task_id)
        if not begin <= self.finished.shares[task_id].create_time <= end:
            self.exact = False

    def _remove_finished(self, task_id: str) -> None:
        if self.finished.remove(task_id):
            self.known.forget(task_id)
