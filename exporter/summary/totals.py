"""The additive figures of a set of tasks: counts, histograms, sums and per-URL anomalies.

Everything here is a sum over tasks, so the figures of a window are those of its pages
added up, and a finished task's own figures can be added to a window's, and taken out
again when the task leaves it (:mod:`exporter.collection.store`). The columns are read with
C-level builtins (``map``, ``Counter``, ``compress``) rather than a loop over URLs.
"""

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, compress, repeat
from operator import attrgetter, eq, sub
from typing import Final

from exporter.gateway.answers import FINISHED, UNFINISHED, TaskInfo, UrlProgress
from exporter.summary.domain_counts import DomainCounter, merge_counts
from exporter.summary.histogram import Histogram

# ``unknow`` is the API's documented spelling; the correct one is accepted too.
STATUS_OF: Final[dict[object, str]] = {
    "success": "success",
    "wait": "wait",
    "process": "process",
    "failure": "failure",
    "unknow": "unknown",
    "unknown": "unknown",
}
FINISHED_RAW: Final = tuple(sorted(FINISHED))  # the raw values STATUS_OF maps into FINISHED
# ``map(_STATUS, structs)`` reads one field of every struct without a Python loop.
_STATUS: Final = attrgetter("status")
_CREATE_TIME: Final = attrgetter("create_time")
_FINISH_TIME: Final = attrgetter("finish_time")
_PROGRESS: Final = attrgetter("progress")
_URL: Final = attrgetter("url")


class Columns:
    """One page's URLs column by column, in task order, as :meth:`Totals.add_tasks` reads them.

    ``addresses`` are the URLs' ``Url``s; ``creates`` their own CreateTimes, or their
    task's where they have none; ``durations`` their FinishTime minus that, negative
    where they have no completion time. ``domains`` is each task's domain, None where
    its URLs have not one (filled in by :class:`DomainCounter`).
    """

    __slots__ = (
        "addresses",
        "creates",
        "domains",
        "durations",
        "finishes",
        "lengths",
        "progresses",
        "statuses",
        "task_creates",
        "urls",
    )

    def __init__(self, tasks: Sequence[TaskInfo]) -> None:
        url_lists = [task.url_lists for task in tasks]
        self.lengths: list[int] = list(map(len, url_lists))
        self.urls: list[UrlProgress] = list(chain.from_iterable(url_lists))
        self.statuses: list[str | None] = list(map(_STATUS, self.urls))
        self.addresses: list[str] = list(map(_URL, self.urls))
        self.finishes: list[int] = list(map(_FINISH_TIME, self.urls))
        self.task_creates: list[int] = list(map(_CREATE_TIME, tasks))
        creates: list[int] = list(map(_CREATE_TIME, self.urls))
        if 0 in creates:  # a URL without its own CreateTime is timed from its task's
            owners = chain.from_iterable(map(repeat, self.task_creates, self.lengths))
            creates = [own or task for own, task in zip(creates, owners, strict=True)]
        self.creates = creates
        self.durations = _completion_durations(self.finishes, creates)
        self.progresses: list[int] = list(map(_PROGRESS, self.urls))
        self.domains: list[str | None] = []

    @property
    def starts(self) -> list[int]:
        """Where each task's URLs start, and where the last one's end."""
        return list(accumulate(self.lengths, initial=0))

    def durations_of(self, status: str) -> Iterable[int]:
        """The durations of the URLs whose raw status is ``status``."""
        return compress(self.durations, map(eq, self.statuses, repeat(status)))


class Totals:
    """The sums of some tasks' figures, raw statuses still raw (the summary maps them).

    ``url_completion`` holds bucket counts; its exact integer sums are in
    ``completion_sums``, so that the published float is the one nearest the true sum
    whatever the order in which tasks were added.
    """

    __slots__ = (
        "completion_sums",
        "domains",
        "finish_before_create",
        "oldest_unfinished",
        "progress_out_of_range",
        "task_statuses",
        "unfinished_urls",
        "url_completion",
        "url_statuses",
    )

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.task_statuses: Counter[str | None] = Counter()
        self.url_statuses: Counter[str | None] = Counter()
        self.domains = DomainCounter()
        self.url_completion = {status: Histogram(buckets) for status in FINISHED_RAW}
        self.completion_sums = dict.fromkeys(FINISHED_RAW, 0)
        self.progress_out_of_range = 0
        self.finish_before_create = 0
        self.oldest_unfinished: int | None = None
        self.unfinished_urls = 0

    def add_tasks(self, tasks: Sequence[TaskInfo], domain_of_prefix: dict[str, str]) -> "Columns":
        """Add ``tasks``' figures; return the columns they were read from.

        ``domain_of_prefix`` caches parsed hosts across calls (see :class:`DomainCounter`).
        """
        columns = Columns(tasks)
        urls, raw_statuses = columns.urls, columns.statuses
        self.task_statuses.update(map(_STATUS, tasks))
        url_statuses = Counter(raw_statuses)
        self.url_statuses.update(url_statuses)
        columns.domains = self.domains.add_page(
            columns.addresses, raw_statuses, columns.lengths, domain_of_prefix
        )
        self.progress_out_of_range += progress_out_of_range(columns.progresses)
        self.finish_before_create += finished_before_created(
            columns.finishes, columns.creates, columns.durations
        )
        for status in FINISHED_RAW:
            self.completion_sums[status] += self.count_completions(
                status, columns.durations_of(status)
            )
        self._add_oldest(tasks, columns.task_creates)
        self.unfinished_urls += len(urls) - sum(url_statuses[status] for status in FINISHED_RAW)
        return columns

    def count_completions(self, status: str, durations: Iterable[int]) -> int:
        """Count the URL completion times ``durations`` of ``status``; return their sum."""
        return _count_completions(self.url_completion[status], Counter(durations))

    def add(self, other: "Totals", *, domains: bool = True) -> None:
        """Add another set's figures (of tasks not in this one); without their counts by
        domain when ``domains`` is false (a summary reads those where they are)."""
        self._merge(other, 1, domains=domains)
        if other.oldest_unfinished is not None:
            self._include_oldest(other.oldest_unfinished)

    def subtract(self, other: "Totals") -> None:
        """Take out the figures of tasks added before, none of them unfinished.

        A minimum cannot be taken back, so only sets without an unfinished task can leave.
        """
        if other.oldest_unfinished is not None:
            raise ValueError("an unfinished task's figures cannot be taken out")
        self._merge(other, -1)

    def _merge(self, other: "Totals", sign: int, *, domains: bool = True) -> None:
        merge_counts(self.task_statuses, other.task_statuses, sign)
        merge_counts(self.url_statuses, other.url_statuses, sign)
        if domains:
            self.domains.merge(other.domains, sign)
        for status in FINISHED_RAW:
            mine, theirs = self.url_completion[status], other.url_completion[status]
            mine.counts = [a + sign * b for a, b in zip(mine.counts, theirs.counts, strict=True)]
            mine.count += sign * theirs.count
            self.completion_sums[status] += sign * other.completion_sums[status]
        self.progress_out_of_range += sign * other.progress_out_of_range
        self.finish_before_create += sign * other.finish_before_create
        self.unfinished_urls += sign * other.unfinished_urls

    def _add_oldest(self, tasks: Sequence[TaskInfo], task_creates: list[int]) -> None:
        oldest = min(
            (
                created
                for task, created in zip(tasks, task_creates, strict=True)
                if created > 0 and STATUS_OF.get(task.status) in UNFINISHED
            ),
            default=None,
        )
        if oldest is not None:
            self._include_oldest(oldest)

    def _include_oldest(self, created: int) -> None:
        """Count ``created`` among the unfinished tasks' CreateTimes (the oldest is kept)."""
        if self.oldest_unfinished is None or created < self.oldest_unfinished:
            self.oldest_unfinished = created


def progress_out_of_range(progresses: list[int]) -> int:
    """How many of ``progresses`` are outside 0..100 (two C-level passes tell when none is)."""
    if not progresses or (min(progresses) >= 0 and max(progresses) <= 100):
        return 0
    return sum(1 for progress in progresses if not 0 <= progress <= 100)


def finished_before_created(finishes: list[int], creates: list[int], durations: list[int]) -> int:
    """How many URLs have a FinishTime (0: not finished), and one before their CreateTime;
    none when no duration (FinishTime minus CreateTime) is negative, which a pass tells."""
    if not durations or min(durations) >= 0:
        return 0
    return sum(
        1 for finish, created in zip(finishes, creates, strict=True) if finish and finish < created
    )


def _completion_durations(finishes: list[int], creates: list[int]) -> list[int]:
    """Each URL's FinishTime minus CreateTime; negative (left out) when it has none.

    Usually every CreateTime is positive, so a FinishTime of 0 already gives a negative
    duration; with a CreateTime of 0 or less those URLs are marked negative explicitly.
    """
    durations = list(map(sub, finishes, creates))
    if creates and min(creates) <= 0:
        return [
            duration if finish else -1 for duration, finish in zip(durations, finishes, strict=True)
        ]
    return durations


def _count_completions(histogram: Histogram, durations: Counter[int]) -> int:
    """Count ``durations`` (value: how many) into the buckets; return their sum, an integer.

    Negative durations (no FinishTime, or one before CreateTime) are left out. Looping over
    distinct values rather than URLs: completion times in whole seconds repeat a lot. The
    sum stays an integer, so that the published float is the one nearest the exact sum
    (beyond 2**53 a running float sum would depend on the order of the URLs).
    """
    counts = histogram.counts
    bounds = histogram.bounds
    total = 0
    observed = 0
    for value, count in durations.items():
        if value >= 0:
            counts[bisect_left(bounds, value)] += count
            total += value * count
            observed += count
    histogram.count += observed
    return total
