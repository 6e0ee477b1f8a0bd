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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from heapq import merge
from itertools import chain, compress, islice, repeat
from operator import itemgetter, ne, not_, truediv
from typing import Final, NamedTuple

from exporter.gateway.answers import FINISHED, STATUSES, TaskInfo, UrlProgress
from exporter.gateway.paging import TaskWindow
from exporter.settings.config import DEFAULT_BUCKETS, setting_default
from exporter.summary.domain_counts import domain_urls
from exporter.summary.histogram import Histogram
from exporter.summary.labels import bounded_label_value, fit_as_they_are
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
    """One unfinished URL and how far it has got (0..1).

    A named tuple: up to ``max_url_series`` of them are made every collection, and a
    tuple is made at C speed.
    """

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


def _count_window_anomalies(summary: TargetSummary, window: TaskWindow) -> None:
    """Anomalies of the paging rather than of any one task."""
    summary.anomalies["duplicate_task"] = window.duplicate_tasks
    if window.total_count is not None and window.total_count != window.task_count:
        summary.anomalies["total_count_mismatch"] = 1


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


# A task's URLs in its page's columns: the page's URLs, their statuses, start and stop.
_UrlSpan = tuple[list[UrlProgress], list[str | None], int, int]


class Summarizer:
    """Summarises one target's tasks page by page, while later pages are still on the wire.

    ``tests/reference.py`` states the figures one URL at a time; this computes them
    column by column (:class:`~exporter.summary.totals.Totals`), which costs less than
    that loop (see ``benchmarks/``) and lets a page be summarised while the next ones
    are fetched. Counts, histograms and anomalies are sums, so each page adds its own
    as it arrives; what depends on the order of all tasks (the newest unfinished URLs
    and finished tasks, up to the caps) is picked by :meth:`summary` once the last page
    is in. Tasks summarised earlier (a store's finished ones) join with
    :meth:`add_summarised`.
    """

    def __init__(self, limits: SummaryLimits) -> None:
        self._limits = limits
        self._builder = _SummaryBuilder(limits)
        self._totals = Totals(limits.buckets)
        self._domain_of_prefix: dict[str, str] = {}
        self._tasks: list[TaskInfo] = []
        # Where each task's URLs are in its page's columns, to find its unfinished ones.
        self._url_spans: list[_UrlSpan] = []
        self._earlier: Sequence[Completion] = ()

    def add_page(self, tasks: Sequence[TaskInfo]) -> None:
        """Add one page of tasks, in page order, each task once."""
        columns = self._totals.add_tasks(tasks, self._domain_of_prefix)
        self._tasks.extend(tasks)
        starts = columns.starts
        self._url_spans.extend(
            zip(repeat(columns.urls), repeat(columns.statuses), starts, starts[1:], strict=False)
        )

    def add_summarised(self, totals: Totals, completions: Sequence[Completion]) -> None:
        """Add tasks summarised before: their totals, and their completions newest first.

        They must have no unfinished URL (no progress series to pick among them).
        """
        self._totals.add(totals)
        self._earlier = completions

    def summary(self, window: TaskWindow) -> TargetSummary:
        """The summary of every task added; ``window`` says how the paging went."""
        builder = self._builder
        totals = self._totals
        _count_statuses(builder, totals.task_statuses, builder.tasks_by_status)
        _count_statuses(builder, totals.url_statuses, builder.urls_by_status)
        builder.anomalies["progress_out_of_range"] = totals.progress_out_of_range
        builder.anomalies["finish_before_create"] = totals.finish_before_create
        builder.oldest_unfinished = totals.oldest_unfinished
        for status in FINISHED_RAW:
            histogram = builder.url_completion[status]
            histogram.counts = list(totals.url_completion[status].counts)
            histogram.count = totals.url_completion[status].count
            histogram.total = float(totals.completion_sums[status])
        order = sorted(range(len(self._tasks)), key=lambda i: _newest_first(self._tasks[i]))
        newest_first = [self._tasks[i] for i in order]
        _task_completion(builder, newest_first, self._earlier)
        self._pick_url_progress(newest_first, [self._url_spans[i] for i in order])
        summary = builder.summary()
        summary.domain_urls = domain_urls(
            totals.domains.counts.items(),
            _published_status,
            STATUSES,
            self._limits.max_domain_series,
        )
        _count_window_anomalies(summary, window)
        return summary

    def _pick_url_progress(self, tasks: list[TaskInfo], spans: list["_UrlSpan"]) -> None:
        """Progress series for the newest unfinished URLs up to the cap; the rest are counted.

        Only the tasks up to the cap are looked at, each by its slice of the columns, and
        their unfinished URLs are handed on in batches of about what the cap still takes.
        """
        builder = self._builder
        finished = frozenset(FINISHED_RAW)
        unfinished_urls = self._totals.unfinished_urls
        seen = 0
        batch: list[tuple[str, UrlProgress]] = []
        for task, (urls, statuses, start, stop) in zip(tasks, spans, strict=True):
            if builder.progress_room() <= len(batch):
                seen += builder.add_progress_batch(batch)
                batch = []
                if not builder.progress_room():
                    break
            unfinished = map(not_, map(finished.__contains__, statuses[start:stop]))
            batch.extend(zip(repeat(task.task_id or ""), compress(urls[start:stop], unfinished)))
        seen += builder.add_progress_batch(batch)
        # Every unfinished URL past the cap is dropped, duplicates included.
        builder.url_series_dropped = unfinished_urls - seen


def _published_status(raw: str | None) -> str:
    """The status a raw one is published as; ``_count_statuses`` counts the unknown ones."""
    return STATUS_OF.get(raw, "unknown")


def _count_statuses(
    builder: "_SummaryBuilder", raw_counts: Counter[str | None], into: dict[str, int]
) -> None:
    for raw, count in raw_counts.items():
        status = STATUS_OF.get(raw)
        if status is None:
            builder.anomalies["unknown_status"] += count
            status = "unknown"
        into[status] += count


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


def _task_completion(
    builder: "_SummaryBuilder", tasks: list[TaskInfo], earlier: Sequence[Completion]
) -> None:
    """The most recent finished tasks' durations, of ``tasks`` (newest first) and ``earlier``.

    Only the tasks up to the cap are looked at; ``earlier`` are in the same order.
    """
    limit = builder.limits.max_task_series
    if limit <= 0:
        return
    # Tasks without a completion time add nothing: leaving them out keeps the order. Lazily:
    # only the tasks up to the cap are timed (a task's time is a loop over its URLs).
    timed = (
        (_newest_first(task), task.task_id or "", seconds)
        for task in tasks
        if (seconds := completion_of(task)) is not None
    )
    summarised = ((done.order, done.task_id, done.seconds) for done in earlier)
    first = next(timed, None)
    if first is None:  # no merge needed, which is what a store's summary mostly has
        picked: Iterator[tuple[tuple[int, str], str, float]] = summarised
    else:
        picked = merge(chain([first], timed), summarised, key=itemgetter(0))
    for _, task_id, seconds in islice(picked, limit):
        builder.add_task_completion(task_id, seconds)


def _ratio(progress: int) -> float:
    """A Progress (0 to 100, as the API should send it) as a ratio, within 0..1 whatever."""
    return min(1.0, max(0.0, progress / 100))


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

    def progress_room(self) -> int:
        """How many more progress series the cap takes."""
        return max(0, self.limits.max_url_series - len(self.url_progress))

    def add_progress_batch(self, batch: list[tuple[str, UrlProgress]]) -> int:
        """Add a series for each ``(task_id, url)`` in order, until the cap; return how many
        were looked at (the duplicates among them included).

        Usually no value is long enough to need cutting and no two are the same: then the
        series are made column by column, and only otherwise one by one.
        """
        room = self.progress_room()
        chosen = batch[:room]
        task_ids = [task_id for task_id, _ in chosen]
        urls = [url.url for _, url in chosen]
        keys = list(zip(task_ids, urls, strict=True))
        if (
            fit_as_they_are([*task_ids, *urls], self.limits.max_label_value_length)
            and len(set(keys)) == len(keys)
            and self.progress_keys.isdisjoint(keys)
        ):
            self.progress_keys.update(keys)
            progresses = [url.progress for _, url in chosen]
            if progresses and (min(progresses) < 0 or max(progresses) > 100):
                ratios = list(map(_ratio, progresses))
            else:
                ratios = list(map(truediv, progresses, repeat(100)))
            # tuple.__new__ makes each at C speed; UnfinishedUrl(...) would call Python code.
            rows = zip(task_ids, urls, ratios, strict=True)
            self.url_progress.extend(map(tuple.__new__, repeat(UnfinishedUrl), rows))
            return len(chosen)
        for looked_at, (task_id, url) in enumerate(batch):
            if not self.progress_room():
                return looked_at
            self.add_progress(task_id, url.url, url.progress)
        return len(batch)

    def add_progress(self, task_id: str, url: str, progress: int) -> None:
        key = (self.bounded(task_id), self.bounded(url))
        if key in self.progress_keys:  # two identical series: Prometheus rejects the scrape
            self.anomalies["duplicate_url"] += 1
            return
        self.progress_keys.add(key)
        self.count_cuts((task_id, url), key)
        self.url_progress.append(UnfinishedUrl(key[0], key[1], _ratio(progress)))

    def add_task_completion(self, task_id: str, seconds: float) -> None:
        label = self.bounded(task_id)
        self.count_cuts((task_id,), (label,))
        self.task_completion.append((label, seconds))

    def bounded(self, value: str) -> str:
        return bounded_label_value(value, self.limits.max_label_value_length)

    def count_cuts(self, values: tuple[str, ...], labels: tuple[str, ...]) -> None:
        """Count the label values that are not their values, once each published series."""
        self.anomalies["label_value_truncated"] += sum(map(ne, values, labels))
