"""Turn one target's tasks into the numbers the metrics publish: a pure function, no I/O.

The API's answers are dirty (see ``tests/fixtures/sample-response.json``): statuses
outside the enum, FinishTime before CreateTime, Progress outside 0..100. Each is
counted as an anomaly by reason and kept out of the figures it would distort, rather
than failing the whole collection.

This is also where the series are picked, so it is where label values are bounded: a
``Url`` or ``TaskId`` longer than the limit becomes a shorter, still unique value (see
:func:`bounded_label_value`), and each one cut is counted as ``label_value_truncated``.
"""

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, repeat
from operator import attrgetter, eq, lt, ne, not_, sub
from typing import Final

from exporter.client import TaskWindow
from exporter.config import DEFAULT_BUCKETS, setting_default
from exporter.histogram import Histogram
from exporter.model import FINISHED, STATUSES, UNFINISHED, TaskInfo, UrlProgress
from exporter.summary_domains import DomainCounter, domain_urls
from exporter.summary_labels import bounded_label_value

__all__ = [
    "ANOMALIES",
    "Histogram",
    "Summarizer",
    "SummaryLimits",
    "TargetSummary",
    "UnfinishedUrl",
    "bounded_label_value",
    "summarize",
]

ANOMALIES: Final = (
    "unknown_status",
    "finish_before_create",
    "progress_out_of_range",
    "duplicate_task",
    "duplicate_url",
    "total_count_mismatch",
    "label_value_truncated",
)
# ``unknow`` is the API's documented spelling; the correct one is accepted too.
_STATUS_OF: Final[dict[object, str]] = {
    "success": "success",
    "wait": "wait",
    "process": "process",
    "failure": "failure",
    "unknow": "unknown",
    "unknown": "unknown",
}


@dataclass(frozen=True)
class UnfinishedUrl:
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
    summarizer.add_page(window.tasks)
    return summarizer.summary(window)


def _count_window_anomalies(summary: TargetSummary, window: TaskWindow) -> None:
    """Anomalies of the paging rather than of any one task."""
    summary.anomalies["duplicate_task"] = window.duplicate_tasks
    if window.total_count is not None and window.total_count != len(window.tasks):
        summary.anomalies["total_count_mismatch"] = 1


_FINISHED_RAW: Final = tuple(sorted(FINISHED))  # the raw values _STATUS_OF maps into FINISHED
# ``map(_STATUS, structs)`` reads one field of every struct without a Python loop.
_STATUS: Final = attrgetter("status")
_CREATE_TIME: Final = attrgetter("create_time")
_FINISH_TIME: Final = attrgetter("finish_time")
_PROGRESS: Final = attrgetter("progress")
_URL: Final = attrgetter("url")


# A task's URLs in its page's columns: the page's URLs, their statuses, start and stop.
_UrlSpan = tuple[list[UrlProgress], list[str | None], int, int]


class Summarizer:
    """Summarises one target's tasks page by page, while later pages are still on the wire.

    ``tests/reference.py`` states the figures one URL at a time; this computes them
    column by column with C-level builtins (``map``, ``Counter``, ``compress``), which
    costs less than that loop (see ``benchmarks/``) and lets a page be summarised while
    the next ones are fetched. Counts, histograms and anomalies are sums, so each page
    adds its own as it arrives; what depends on the order of all tasks (the newest
    unfinished URLs and finished tasks, up to the caps) is picked by :meth:`summary`
    once the last page is in. A histogram's sum is kept as an exact integer and made a
    float once, so it is the float nearest the true sum whatever the order of pages.
    """

    def __init__(self, limits: SummaryLimits) -> None:
        self._limits = limits
        self._builder = _SummaryBuilder(limits)
        self._tasks: list[TaskInfo] = []
        # Where each task's URLs are in its page's columns, to find its unfinished ones.
        self._url_spans: list[_UrlSpan] = []
        self._unfinished = 0
        self._task_statuses: Counter[str | None] = Counter()
        self._url_statuses: Counter[str | None] = Counter()
        self._completion_sums = dict.fromkeys(_FINISHED_RAW, 0)
        self._domains = DomainCounter()

    def add_page(self, tasks: Sequence[TaskInfo]) -> None:
        """Add one page of tasks, in page order, each task once."""
        self._add_columns(tasks)

    def summary(self, window: TaskWindow) -> TargetSummary:
        """The summary of every page added; ``window`` holds the same tasks and the paging."""
        builder = self._builder
        limits = self._limits
        _count_statuses(builder, self._task_statuses, builder.tasks_by_status)
        _count_statuses(builder, self._url_statuses, builder.urls_by_status)
        for status, total in self._completion_sums.items():
            builder.url_completion[status].total = float(total)
        order = sorted(range(len(self._tasks)), key=lambda i: _newest_first(self._tasks[i]))
        newest_first = [self._tasks[i] for i in order]
        _task_completion(builder, newest_first, [task.create_time for task in newest_first])
        self._pick_url_progress(newest_first, [self._url_spans[i] for i in order])
        summary = builder.summary()
        summary.domain_urls = domain_urls(
            self._domains.counts.items(), _published_status, STATUSES, limits.max_domain_series
        )
        _count_window_anomalies(summary, window)
        return summary

    def _add_columns(self, tasks: Sequence[TaskInfo]) -> None:
        """Add a page's counts, sums and anomalies."""
        url_lists = [task.url_lists for task in tasks]
        urls: list[UrlProgress] = list(chain.from_iterable(url_lists))
        raw_statuses: list[str | None] = list(map(_STATUS, urls))
        finishes: list[int] = list(map(_FINISH_TIME, urls))
        creates: list[int] = list(map(_CREATE_TIME, urls))
        task_creates: list[int] = list(map(_CREATE_TIME, tasks))
        if 0 in creates:  # a URL without its own CreateTime is timed from its task's
            owners = chain.from_iterable(map(repeat, task_creates, map(len, url_lists)))
            creates = [own or task for own, task in zip(creates, owners, strict=True)]
        builder = self._builder
        anomalies = builder.anomalies
        self._task_statuses.update(map(_STATUS, tasks))
        url_statuses = Counter(raw_statuses)
        self._url_statuses.update(url_statuses)
        self._domains.add_page(list(map(_URL, urls)), raw_statuses, url_statuses)
        progresses: list[int] = list(map(_PROGRESS, urls))
        if progresses and (min(progresses) < 0 or max(progresses) > 100):
            anomalies["progress_out_of_range"] += sum(1 for p in progresses if not 0 <= p <= 100)
        anomalies["finish_before_create"] += _finished_before_created(finishes, creates)
        durations = _completion_durations(finishes, creates)
        for status in _FINISHED_RAW:
            chosen = Counter(compress(durations, map(eq, raw_statuses, repeat(status))))
            self._completion_sums[status] += _count_completions(
                builder.url_completion[status], chosen
            )
        oldest = min(
            (
                created
                for task, created in zip(tasks, task_creates, strict=True)
                if created > 0 and _STATUS_OF.get(task.status) in UNFINISHED
            ),
            default=None,
        )
        if oldest is not None and (
            builder.oldest_unfinished is None or oldest < builder.oldest_unfinished
        ):
            builder.oldest_unfinished = oldest
        self._tasks.extend(tasks)
        starts = list(accumulate(map(len, url_lists), initial=0))
        self._url_spans.extend(
            zip(repeat(urls), repeat(raw_statuses), starts, starts[1:], strict=False)
        )
        self._unfinished += len(urls) - sum(url_statuses[status] for status in _FINISHED_RAW)

    def _pick_url_progress(self, tasks: list[TaskInfo], spans: list["_UrlSpan"]) -> None:
        """Progress series for the newest unfinished URLs up to the cap; the rest are counted.

        Only the tasks up to the cap are looked at, each by its slice of the columns.
        """
        builder = self._builder
        cap = self._limits.max_url_series
        finished = frozenset(_FINISHED_RAW)
        seen = 0
        for task, (urls, statuses, start, stop) in zip(tasks, spans, strict=True):
            task_id = task.task_id or ""
            unfinished = map(not_, map(finished.__contains__, statuses[start:stop]))
            for url in compress(urls[start:stop], unfinished):
                if len(builder.url_progress) >= cap:
                    # Every unfinished URL from here on is dropped, duplicates included.
                    builder.url_series_dropped = self._unfinished - seen
                    return
                seen += 1
                builder.add_progress(task_id, url.url, url.progress)
        builder.url_series_dropped = self._unfinished - seen


def _finished_before_created(finishes: list[int], creates: list[int]) -> int:
    """How many URLs have a FinishTime, and one before their CreateTime.

    FinishTime 0 means "not finished", so it is never early. Usually every CreateTime is
    positive and each 0 counts as "before": the count is corrected without a second pass.
    """
    if not creates or min(creates) > 0:
        return int(sum(map(lt, finishes, creates))) - finishes.count(0)
    return int(sum(map(lt, compress(finishes, finishes), compress(creates, finishes))))


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


def _published_status(raw: str | None) -> str:
    """The status a raw one is published as; ``_count_statuses`` counts the unknown ones."""
    return _STATUS_OF.get(raw, "unknown")


def _count_statuses(
    builder: "_SummaryBuilder", raw_counts: Counter[str | None], into: dict[str, int]
) -> None:
    for raw, count in raw_counts.items():
        status = _STATUS_OF.get(raw)
        if status is None:
            builder.anomalies["unknown_status"] += count
            status = "unknown"
        into[status] += count


def _count_completions(histogram: "Histogram", durations: Counter[int]) -> int:
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


def _task_completion(
    builder: "_SummaryBuilder", tasks: list[TaskInfo], task_creates: list[int]
) -> None:
    """The most recent finished tasks' durations; only those tasks' URLs are looked at."""
    limit = builder.limits.max_task_series
    completion = builder.task_completion
    for task, created in zip(tasks, task_creates, strict=True):
        if len(completion) >= limit:
            return
        if _STATUS_OF.get(task.status) not in FINISHED:
            continue
        latest_finish = 0
        for url in task.url_lists:
            finish = url.finish_time
            if finish and url.status in FINISHED and finish >= (url.create_time or created):
                latest_finish = max(latest_finish, finish)
        if latest_finish >= created and latest_finish > 0:
            builder.add_task_completion(task.task_id or "", float(latest_finish - created))


def _newest_first(task: TaskInfo) -> tuple[int, str]:
    return -task.create_time, task.task_id or ""


class _SummaryBuilder:
    """The figures of one summary while they are filled in, and the series they pick."""

    def __init__(self, limits: SummaryLimits) -> None:
        self.limits = limits
        self.tasks_by_status = dict.fromkeys(STATUSES, 0)
        self.urls_by_status = dict.fromkeys(STATUSES, 0)
        self.anomalies = dict.fromkeys(ANOMALIES, 0)
        self.url_progress: list[UnfinishedUrl] = []
        self.progress_keys: set[tuple[str, str]] = set()
        self.url_series_dropped = 0
        self.url_completion = {status: Histogram(limits.buckets) for status in sorted(FINISHED)}
        self.task_completion: list[tuple[str, float]] = []
        self.oldest_unfinished: int | None = None

    def summary(self) -> TargetSummary:
        return TargetSummary(
            tasks_by_status=self.tasks_by_status,
            urls_by_status=self.urls_by_status,
            url_progress=self.url_progress,
            url_series_dropped=self.url_series_dropped,
            url_completion=self.url_completion,
            task_completion=self.task_completion,
            oldest_unfinished_created=self.oldest_unfinished,
            anomalies=self.anomalies,
        )

    def add_progress(self, task_id: str, url: str, progress: int) -> None:
        if len(self.url_progress) >= self.limits.max_url_series:
            self.url_series_dropped += 1
            return
        key = (self.bounded(task_id), self.bounded(url))
        if key in self.progress_keys:  # two identical series: Prometheus rejects the scrape
            self.anomalies["duplicate_url"] += 1
            return
        self.progress_keys.add(key)
        self.count_cuts((task_id, url), key)
        ratio = min(1.0, max(0.0, progress / 100))
        self.url_progress.append(UnfinishedUrl(key[0], key[1], ratio))

    def add_task_completion(self, task_id: str, seconds: float) -> None:
        label = self.bounded(task_id)
        self.count_cuts((task_id,), (label,))
        self.task_completion.append((label, seconds))

    def bounded(self, value: str) -> str:
        return bounded_label_value(value, self.limits.max_label_value_length)

    def count_cuts(self, values: tuple[str, ...], labels: tuple[str, ...]) -> None:
        """Count the label values that are not their values, once each published series."""
        self.anomalies["label_value_truncated"] += sum(map(ne, values, labels))
