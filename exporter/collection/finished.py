"""The window's finished tasks, each kept small, as what it adds to the window's figures.

A task is *finished* when its status and every one of its URLs' is ``success`` or
``failure``: the API never changes it again, so :class:`FinishedTasks` keeps it as a
:class:`FinishedShare`: its URLs' completion times by status (an ``array`` of 64-bit
integers, 8 bytes a URL), its domain (or, for a task on several hosts, its counts by
domain and status), its anomalies and its own completion time; not its URLs, and not a
:class:`~exporter.summary.totals.Totals` of its own, whose counters and histograms
would cost a few kilobytes a task and most of a full sync's time to build one by one.

The figures of a page's finished tasks are added together, column by column
(:func:`add_finished`), and each task's share is cut from the same columns. A share's
own Totals are made only when its task leaves the window (a few tasks a collection),
from what it keeps: they equal what the page added for it, so taking them out leaves
the window's figures as if the task had never been in it.
"""

import heapq
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter, eq, ge
from typing import Final

from exporter.gateway.answers import FINISHED, TaskInfo
from exporter.summary.domain_counts import count_by_domain
from exporter.summary.target_summary import Completion
from exporter.summary.totals import (
    FINISHED_RAW,
    Columns,
    Totals,
    finished_before_created,
    progress_out_of_range,
)

_STATUS: Final = attrgetter("status")
_NONE: Final[tuple[int, ...]] = ()  # shared by every task without a URL of some status
# A task on several hosts: its URL counts by (domain, raw status).
DomainCounts = tuple[tuple[tuple[str, str | None], int], ...]


def is_finished(task: TaskInfo) -> bool:
    """Whether the API will never change ``task`` again: it and all its URLs are done."""
    return task.status in FINISHED and FINISHED.issuperset(map(_STATUS, task.url_lists))


@dataclass(frozen=True, slots=True)
class FinishedShare:
    """What one finished task adds to its window's figures.

    ``durations`` has one column per status of ``FINISHED_RAW``: the FinishTime minus
    CreateTime of each of the task's URLs of that status, negative where it has none.
    ``domains`` is the one domain of all its URLs, or its counts by domain and status.
    """

    create_time: int
    status: str
    durations: tuple[Sequence[int], ...]
    domains: str | DomainCounts
    progress_out_of_range: int
    finish_before_create: int
    completion: Completion | None

    def totals(self, buckets: tuple[float, ...]) -> Totals:
        """The task's figures, as :meth:`Totals.add_tasks` of the task alone gives them."""
        totals = Totals(buckets)
        totals.task_statuses[self.status] += 1
        for status, durations in zip(FINISHED_RAW, self.durations, strict=True):
            if durations:
                totals.url_statuses[status] = len(durations)
                totals.completion_sums[status] = totals.count_completions(status, durations)
                if isinstance(self.domains, str):
                    totals.domains.counts[self.domains, status] = len(durations)
        if not isinstance(self.domains, str):
            totals.domains.counts.update(dict(self.domains))
        totals.progress_out_of_range = self.progress_out_of_range
        totals.finish_before_create = self.finish_before_create
        return totals


class FinishedTasks:
    """The window's finished tasks by TaskId, as their shares, and the sum of their figures."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.shares: dict[str, FinishedShare] = {}
        self.totals = Totals(buckets)

    def copy(self) -> "FinishedTasks":
        """An independent copy."""
        clone = FinishedTasks(self.buckets)
        clone.shares = dict(self.shares)
        clone.totals.add(self.totals)
        return clone

    def add(self, tasks: dict[str, TaskInfo]) -> None:
        """Add finished ``tasks``, by TaskId, none of them held already."""
        shares = add_finished(self.totals, list(tasks.values()), list(tasks))
        self.shares.update(zip(tasks, shares, strict=True))

    def remove(self, task_id: str) -> bool:
        """Take the task and its figures out, if held; whether it was."""
        share = self.shares.pop(task_id, None)
        if share is None:
            return False
        self.totals.subtract(share.totals(self.buckets))
        return True

    def created_before(self, begin: int) -> list[str]:
        """The TaskIds of the tasks created before ``begin``."""
        return [task_id for task_id, share in self.shares.items() if share.create_time < begin]

    def newest_completions(self, count: int) -> list[Completion]:
        """The completions of the ``count`` newest tasks that have one, newest first."""
        timed = (share.completion for share in self.shares.values() if share.completion is not None)
        return heapq.nsmallest(count, timed, key=attrgetter("order"))


def add_finished(
    totals: Totals, tasks: Sequence[TaskInfo], task_ids: Sequence[str]
) -> list[FinishedShare]:
    """Add the figures of finished ``tasks`` (TaskIds ``task_ids``) to ``totals``; their shares."""
    domain_of_prefix: dict[str, str] = {}  # for this page only: nothing kept holds it
    columns = totals.add_tasks(tasks, domain_of_prefix)
    cutter = _Cutter(columns, domain_of_prefix)
    return [
        cutter.share(task, task_id, start, length, domain)
        for task, task_id, start, length, domain in zip(
            tasks, task_ids, columns.starts, columns.lengths, columns.domains, strict=False
        )
    ]


class _Cutter:
    """Cuts each task's share out of its page's columns, with the page's shortcuts.

    What holds for the whole page (one status only, every URL timed, no anomaly) spares
    each task the pass that would find it out.
    """

    def __init__(self, columns: Columns, domain_of_prefix: dict[str, str]) -> None:
        self.columns = columns
        self.domain_of_prefix = domain_of_prefix
        self.only = _only_status(columns.statuses)
        durations = columns.durations
        # Every URL timed: a task's latest FinishTime is simply the largest.
        self.all_timed = not durations or min(durations) >= 0

    def share(
        self, task: TaskInfo, task_id: str, start: int, length: int, domain: str | None
    ) -> FinishedShare:
        columns = self.columns
        stop = start + length
        durations = columns.durations[start:stop]
        return FinishedShare(
            create_time=task.create_time,
            status=task.status or "",  # finished: success or failure
            durations=self._by_status(durations, start, stop),
            domains=domain if domain is not None else self._domain_counts(start, stop),
            progress_out_of_range=(
                progress_out_of_range(columns.progresses[start:stop])
                if columns.progress_out_of_range
                else 0
            ),
            finish_before_create=(
                finished_before_created(
                    columns.finishes[start:stop], columns.creates[start:stop], durations
                )
                if columns.finish_before_create
                else 0
            ),
            completion=self._completion(task, task_id, durations, start, stop),
        )

    def _by_status(self, durations: list[int], start: int, stop: int) -> tuple[Sequence[int], ...]:
        if not durations:
            return (_NONE,) * len(FINISHED_RAW)
        statuses = self.columns.statuses[start:stop] if self.only is None else []
        only = self.only or _only_status(statuses)
        if only is not None:
            return tuple(_compact(durations) if s == only else _NONE for s in FINISHED_RAW)
        return tuple(
            _compact(list(compress(durations, map(eq, statuses, repeat(status)))))
            for status in FINISHED_RAW
        )

    def _domain_counts(self, start: int, stop: int) -> DomainCounts:
        columns = self.columns
        counts = count_by_domain(
            columns.addresses[start:stop], columns.statuses[start:stop], self.domain_of_prefix
        )
        return tuple(counts.items())

    def _completion(
        self, task: TaskInfo, task_id: str, durations: list[int], start: int, stop: int
    ) -> Completion | None:
        """As :func:`~exporter.summary.target_summary.completion_of`: the latest FinishTime
        of the URLs timed (a duration of 0 or more), less the task's CreateTime."""
        finishes = self.columns.finishes[start:stop]
        if self.all_timed:
            latest = max(finishes, default=0)
        else:
            latest = max(compress(finishes, map(ge, durations, repeat(0))), default=0)
        created = task.create_time
        if latest > 0 and latest >= created:
            return Completion(created, task_id, float(latest - created))
        return None


def _only_status(statuses: list[str | None]) -> str | None:
    """The one status of ``statuses`` (all finished), or None if they have both."""
    present = [status for status in FINISHED_RAW if status in statuses]
    return present[0] if len(present) == 1 else None


def _compact(values: list[int]) -> Sequence[int]:
    """``values`` as 8 bytes each; as a tuple in the rare case one is past 64 bits (the
    difference of two 64-bit times can be)."""
    try:
        return array("q", values)
    except OverflowError:
        return tuple(values)
