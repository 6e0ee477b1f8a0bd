"""Turn one target's tasks into the numbers the metrics publish: a pure function, no I/O.

The API's answers are dirty (see ``tests/fixtures/sample-response.json``): statuses
outside the enum, FinishTime before CreateTime, Progress outside 0..100. Each is
counted as an anomaly by reason and kept out of the figures it would distort, rather
than failing the whole collection.

This is also where the series are picked, so it is where label values are bounded: a
``Url`` or ``TaskId`` longer than the limit becomes a shorter, still unique value (see
:func:`bounded_label_value`), and each one cut is counted as ``label_value_truncated``.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from heapq import merge
from itertools import islice
from operator import attrgetter
from typing import Final, NamedTuple

from exporter.gateway.answers import FINISHED, STATUSES, TaskInfo
from exporter.gateway.paging import TaskWindow
from exporter.settings.config import DEFAULT_BUCKETS, setting_default
from exporter.summary.domain_counts import domain_urls
from exporter.summary.histogram import Histogram
from exporter.summary.labels import bounded_label_value
from exporter.summary.totals import FINISHED_RAW, STATUS_OF, Totals

ANOMALIES: Final = (
    "unknown_status",
    "finish_before_create",
    "progress_out_of_range",
    "duplicate_task",
    "duplicate_url",
    "total_count_mismatch",
    "label_value_truncated",
)


class UnfinishedUrl(NamedTuple):
    """One unfinished URL and how far it has got (0..1)."""

    task_id: str
    url: str
    ratio: float


@dataclass
class TargetSummary:
    """Everything published about one target from one collection."""

    tasks_by_status: dict[str, int]
    urls_by_status: dict[str, int]
    url_progress: list[UnfinishedUrl]
    url_series_dropped: int
    url_completion: dict[str, Histogram]
    task_completion: list[tuple[str, float]]
    oldest_unfinished_created: int | None
    anomalies: dict[str, int]
    # domain -> status -> URLs, the domains with most URLs first and ``_other`` last
    domain_urls: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SummaryLimits:
    """Caps and buckets that keep the exposition bounded however many URLs there are."""

    max_url_series: int = setting_default("max_url_series")
    max_task_series: int = setting_default("max_task_series")
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    # UTF-8 bytes of a url or task_id label value
    max_label_value_length: int = setting_default("max_label_value_length")
    max_domain_series: int = setting_default("max_domain_series")  # the rest: _other


def summarize(window: TaskWindow, limits: SummaryLimits) -> TargetSummary:
    """Count, measure and cap one target's tasks; newest tasks come first where caps apply.

    The whole window as one page of a :class:`Summarizer`; ``tests/reference.py`` states
    the same figures one URL at a time.
    """
    summarizer = Summarizer(limits)
    summarizer.add_page(window.decoded())
    return summarizer.summary(window)


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished task's completion time, summarised before, and where it sorts."""

    create_time: int
    task_id: str
    seconds: float

    @property
    def order(self) -> tuple[int, str]:
        """Newest first, then by TaskId: the order of :func:`_newest_first`."""
        return -self.create_time, self.task_id


_ORDER: Final = attrgetter("order")


class Summarizer:
    """Summarises one target's tasks, added a page at a time, once all are in.

    ``tests/reference.py`` states the figures one URL at a time; this computes them
    column by column (:class:`~exporter.summary.totals.Totals`), which costs less than
    that loop (see ``benchmarks/``). Counts, histograms and anomalies are sums, so pages
    add up; what depends on the order of all tasks (the newest unfinished URLs and
    finished tasks, up to the caps) is picked by :meth:`summary`. Tasks summed before (a
    store's finished ones, page by page as they arrived) join with :meth:`add_summarised`.
    """

    def __init__(self, limits: SummaryLimits) -> None:
        self._limits = limits
        self._totals = Totals(limits.buckets)
        self._domain_of_prefix: dict[str, str] = {}
        self._tasks: list[TaskInfo] = []
        self._earlier: Sequence[Completion] = ()
        self._domains = [self._totals.domains]  # read together, never merged: see summary

    def add_page(self, tasks: Sequence[TaskInfo]) -> None:
        """Add one page of tasks, in page order, each task once."""
        self._totals.add_tasks(tasks, self._domain_of_prefix)
        self._tasks.extend(tasks)

    def add_summarised(self, totals: Totals, completions: Sequence[Completion]) -> None:
        """Add tasks summarised before: their totals, and their completions newest first.

        They must have no unfinished URL (no progress series to pick among them). Their
        counts by domain are read where they are, not copied: a store holds as many
        domains as its tasks have hosts.
        """
        self._totals.add(totals, domains=False)
        self._domains.append(totals.domains)
        self._earlier = completions

    def summary(self, window: TaskWindow) -> TargetSummary:
        """The summary of every task added; ``window`` says how the paging went."""
        totals, limits = self._totals, self._limits
        anomalies = dict.fromkeys(ANOMALIES, 0)
        summary = TargetSummary(
            tasks_by_status=_published_counts(totals.task_statuses, anomalies),
            urls_by_status=_published_counts(totals.url_statuses, anomalies),
            url_progress=[],
            url_series_dropped=0,
            url_completion={status: _histogram(totals, status) for status in FINISHED_RAW},
            task_completion=[],
            oldest_unfinished_created=totals.oldest_unfinished,
            anomalies=anomalies,
        )
        summary.domain_urls = _bounded_domains(
            domain_urls(
                self._domains,
                totals.url_statuses,
                _published_status,
                STATUSES,
                limits.max_domain_series,
            ),
            limits.max_label_value_length,
            anomalies,
        )
        anomalies["progress_out_of_range"] = totals.progress_out_of_range
        anomalies["finish_before_create"] = totals.finish_before_create
        # Anomalies of the paging rather than of any one task.
        anomalies["duplicate_task"] = window.duplicate_tasks
        if window.total_count is not None and window.total_count != window.task_count:
            anomalies["total_count_mismatch"] = 1
        newest_first = sorted(self._tasks, key=_newest_first)
        _pick_task_completion(summary, newest_first, self._earlier, limits)
        _pick_url_progress(summary, newest_first, totals.unfinished_urls, limits)
        return summary


def _published_status(raw: str | None) -> str:
    """The status a raw one is published as; ``_published_counts`` counts the unknown ones."""
    return STATUS_OF.get(raw, "unknown")


def _published_counts(raw_counts: Counter[str | None], anomalies: dict[str, int]) -> dict[str, int]:
    """Counts by raw status as published, the unknown ones also counted as anomalies."""
    counts = dict.fromkeys(STATUSES, 0)
    for raw, count in raw_counts.items():
        status = STATUS_OF.get(raw)
        if status is None:
            anomalies["unknown_status"] += count
            status = "unknown"
        counts[status] += count
    return counts


def _histogram(totals: Totals, status: str) -> Histogram:
    """The URL completion histogram of ``status``, its sum the exact one made a float."""
    summed = totals.url_completion[status]
    histogram = Histogram(summed.bounds, float(totals.completion_sums[status]), summed.count)
    histogram.counts = list(summed.counts)
    return histogram


def completion_of(task: TaskInfo) -> float | None:
    """A task's latest URL FinishTime minus its CreateTime, if it has finished and one.

    Only a task whose own status is finished has one, timed by its finished URLs whose
    FinishTime is not before their CreateTime.
    """
    if STATUS_OF.get(task.status) not in FINISHED:
        return None
    created = task.create_time
    latest_finish = 0
    for url in task.url_lists:
        finish = url.finish_time
        if finish and url.status in FINISHED and finish >= (url.create_time or created):
            latest_finish = max(latest_finish, finish)
    if latest_finish >= created and latest_finish > 0:
        return float(latest_finish - created)
    return None


def _bounded_domains(
    domains: dict[str, dict[str, int]], max_bytes: int, anomalies: dict[str, int]
) -> dict[str, dict[str, int]]:
    """The ``domain`` label values bounded, each one cut counted; a host name equal to
    another's cut value adds to its series instead of repeating it."""
    bounded: dict[str, dict[str, int]] = {}
    for domain, counts in domains.items():
        label = bounded_label_value(domain, max_bytes)
        anomalies["label_value_truncated"] += label != domain
        held = bounded.setdefault(label, counts)
        if held is not counts:
            for status, count in counts.items():
                held[status] += count
    return bounded


def _pick_task_completion(
    summary: TargetSummary,
    tasks: list[TaskInfo],
    earlier: Sequence[Completion],
    limits: SummaryLimits,
) -> None:
    """The completion times of the newest finished tasks, of ``tasks`` (newest first) and
    ``earlier`` (in the same order), up to the cap; only the tasks up to it are timed."""
    timed = (
        Completion(task.create_time, task.task_id or "", seconds)
        for task in tasks
        if (seconds := completion_of(task)) is not None
    )
    for done in islice(merge(timed, earlier, key=_ORDER), limits.max_task_series):
        label = bounded_label_value(done.task_id, limits.max_label_value_length)
        summary.anomalies["label_value_truncated"] += label != done.task_id
        summary.task_completion.append((label, done.seconds))


def _pick_url_progress(
    summary: TargetSummary,
    tasks: list[TaskInfo],
    unfinished: int,
    limits: SummaryLimits,
) -> None:
    """Progress series for the newest ``unfinished`` URLs up to the cap; every one past it
    is counted as dropped, duplicates included. Only the tasks up to the cap are read."""
    most, length = limits.max_url_series, limits.max_label_value_length
    keys: set[tuple[str, str]] = set()
    looked_at = 0
    for task in tasks:
        task_id = task.task_id or ""
        task_label = bounded_label_value(task_id, length)
        for url in task.url_lists:
            if url.status in FINISHED:
                continue
            if len(summary.url_progress) >= most:
                summary.url_series_dropped = unfinished - looked_at
                return
            looked_at += 1
            key = (task_label, bounded_label_value(url.url, length))
            if key in keys:  # two identical series: Prometheus rejects the scrape
                summary.anomalies["duplicate_url"] += 1
                continue
            keys.add(key)
            summary.anomalies["label_value_truncated"] += (task_label != task_id) + (
                key[1] != url.url
            )
            summary.url_progress.append(UnfinishedUrl(*key, _ratio(url.progress)))
    summary.url_series_dropped = unfinished - looked_at


def _ratio(progress: int) -> float:
    """A Progress (0 to 100, as the API should send it) as a ratio, within 0..1 whatever."""
    return min(1.0, max(0.0, progress / 100))


def _newest_first(task: TaskInfo) -> tuple[int, str]:
    return -task.create_time, task.task_id or ""
