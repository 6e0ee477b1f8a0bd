"""The window's finished tasks, each kept small, as what it adds to the window's figures.

A task is *finished* when its status and every one of its URLs' is ``success`` or
``failure``: the API never changes it again, so :class:`FinishedTasks` keeps it as a
:class:`FinishedShare`: its URLs' completion times by status (an ``array`` of 64-bit
integers, 8 bytes a URL), its domain (or, for a task on several hosts, its counts by
domain and status), its anomalies and its own completion time; not its URLs, and not a
:class:`~exporter.summary.totals.Totals` of its own, whose counters and histograms
would cost a few kilobytes a task and most of a full sync's time to build one by one.

The figures of a page's finished tasks are added together, column by column
(:meth:`FinishedTasks.add`), and each task's share is cut from the same columns. A share's
own Totals are made only when its task leaves the window (a few tasks a collection),
from what it keeps: they equal what the page added for it, so taking them out leaves
the window's figures as if the task had never been in it.
"""

import heapq
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter, eq
from typing import Final

from exporter.gateway.answers import FINISHED, TaskInfo
from exporter.summary.domain_counts import count_by_domain
from exporter.summary.target_summary import Completion, completion_of
from exporter.summary.totals import (
    FINISHED_RAW,
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
                    totals.domains.add(self.domains, status, len(durations))
        if not isinstance(self.domains, str):
            for (domain, raw), count in self.domains:
                totals.domains.add(domain, raw, count)
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
        """Add finished ``tasks`` of a page, by TaskId, none of them held already: their
        figures to the sum together, then each one's share cut from the same columns."""
        domain_of_prefix: dict[str, str] = {}  # for this page only: nothing kept holds it
        columns = self.totals.add_tasks(list(tasks.values()), domain_of_prefix)
        for (task_id, task), start, length, one_domain in zip(
            tasks.items(), columns.starts, columns.lengths, columns.domains, strict=False
        ):
            stop = start + length
            durations = columns.durations[start:stop]
            statuses = columns.statuses[start:stop]
            domains: str | DomainCounts
            if one_domain is None:
                addresses = columns.addresses[start:stop]
                domains = tuple(count_by_domain(addresses, statuses, domain_of_prefix).items())
            else:
                domains = one_domain
            seconds = completion_of(task)
            self.shares[task_id] = FinishedShare(
                create_time=task.create_time,
                status=task.status or "",  # finished: success or failure
                durations=_by_status(durations, statuses),
                domains=domains,
                progress_out_of_range=progress_out_of_range(columns.progresses[start:stop]),
                finish_before_create=finished_before_created(
                    columns.finishes[start:stop], columns.creates[start:stop], durations
                ),
                completion=(
                    None if seconds is None else Completion(task.create_time, task_id, seconds)
                ),
            )

    def remove(self, task_id: str) -> bool:
        """Take the task and its figures out, if held; whether it was."""
        share = self.shares.pop(task_id, None)
        if share is None:
            return False
        self.totals.subtract(share.totals(self.buckets))
        return True

    def urls_of(self, task_id: str) -> dict[str, int]:
        """The held task's URLs by status (each of ``FINISHED_RAW``)."""
        durations = self.shares[task_id].durations
        return {status: len(of) for status, of in zip(FINISHED_RAW, durations, strict=True)}

    def created_before(self, begin: int) -> list[str]:
        """The TaskIds of the tasks created before ``begin``."""
        return [task_id for task_id, share in self.shares.items() if share.create_time < begin]

    def newest_completions(self, count: int) -> list[Completion]:
        """The completions of the ``count`` newest tasks that have one, newest first."""
        timed = (share.completion for share in self.shares.values() if share.completion is not None)
        return heapq.nsmallest(count, timed, key=attrgetter("order"))


def _by_status(durations: list[int], statuses: list[str | None]) -> tuple[Sequence[int], ...]:
    """The durations of each status of ``FINISHED_RAW``; the shared empty tuple where none."""
    by_status = []
    for status in FINISHED_RAW:
        chosen = list(compress(durations, map(eq, statuses, repeat(status))))
        by_status.append(_compact(chosen) if chosen else _NONE)
    return tuple(by_status)


def _compact(values: list[int]) -> Sequence[int]:
    """``values`` as 8 bytes each; as a tuple in the rare case one is past 64 bits (the
    difference of two 64-bit times can be)."""
    try:
        return array("q", values)
    except OverflowError:
        return tuple(values)
