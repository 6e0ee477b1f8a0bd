"""Turn one target's tasks into the numbers the metrics publish: a pure function, no I/O.

The API's answers are dirty (see ``tests/fixtures/sample-response.json``): statuses
outside the enum, FinishTime before CreateTime, Progress outside 0..100. Each is
counted as an anomaly by reason and kept out of the figures it would distort, rather
than failing the whole collection.
"""

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from exporter.client import TaskWindow
from exporter.config import DEFAULT_BUCKETS
from exporter.model import FINISHED, STATUSES, UNFINISHED, TaskInfo, UrlProgress

ANOMALIES: Final = (
    "unknown_status",
    "finish_before_create",
    "progress_out_of_range",
    "duplicate_task",
    "duplicate_url",
    "total_count_mismatch",
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


@dataclass
class Histogram:
    """Observations counted into buckets by upper bound (not cumulative), with their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, cumulative count)`` pairs ending with infinity, like ``le`` buckets."""
        running = 0
        pairs = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


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


@dataclass(frozen=True)
class SummaryLimits:
    """Caps and buckets that keep the exposition bounded however many URLs there are."""

    max_url_series: int = 1000
    max_task_series: int = 100
    buckets: tuple[float, ...] = DEFAULT_BUCKETS


def summarize(window: TaskWindow, limits: SummaryLimits) -> TargetSummary:
    """Count, measure and cap one target's tasks; newest tasks come first where caps apply."""
    builder = _SummaryBuilder(limits)
    for task in sorted(window.tasks, key=_newest_first):
        builder.add_task(task)
    builder.anomalies["duplicate_task"] = window.duplicate_tasks
    if window.total_count is not None and window.total_count != len(window.tasks):
        builder.anomalies["total_count_mismatch"] = 1
    return builder.summary()


def _newest_first(task: TaskInfo) -> tuple[int, str]:
    return -task.get("CreateTime", 0), task.get("TaskId", "")


class _SummaryBuilder:
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

    def status_of(self, raw: object) -> str:
        status = _STATUS_OF.get(raw)
        if status is None:
            self.anomalies["unknown_status"] += 1
            return "unknown"
        return status

    def add_task(self, task: TaskInfo) -> None:
        status = self.status_of(task.get("Status"))
        self.tasks_by_status[status] += 1
        created = task.get("CreateTime", 0)
        task_id = task.get("TaskId", "")
        if (
            status in UNFINISHED
            and created > 0
            and (self.oldest_unfinished is None or created < self.oldest_unfinished)
        ):
            self.oldest_unfinished = created
        latest_finish = self.add_urls(task_id, created, task.get("UrlLists") or [])
        if (
            status in FINISHED
            and latest_finish >= created
            and latest_finish > 0
            and len(self.task_completion) < self.limits.max_task_series
        ):
            self.task_completion.append((task_id, float(latest_finish - created)))

    def add_urls(self, task_id: str, task_created: int, urls: Sequence[UrlProgress]) -> int:
        """Count the task's URLs; return the latest valid FinishTime among them (0 if none)."""
        latest_finish = 0
        anomalies = self.anomalies
        for url in urls:
            status = self.status_of(url.get("Status"))
            self.urls_by_status[status] += 1
            progress = url.get("Progress", 0)
            if not 0 <= progress <= 100:
                anomalies["progress_out_of_range"] += 1
            finish = url.get("FinishTime") or 0
            created = url.get("CreateTime") or task_created
            finished_in_time = finish >= created
            if finish and not finished_in_time:
                anomalies["finish_before_create"] += 1
            if status not in FINISHED:
                self.add_progress(task_id, url.get("Url", ""), progress)
            elif finish and finished_in_time:
                self.url_completion[status].observe(finish - created)
                latest_finish = max(latest_finish, finish)
        return latest_finish

    def add_progress(self, task_id: str, url: str, progress: int) -> None:
        if len(self.url_progress) >= self.limits.max_url_series:
            self.url_series_dropped += 1
            return
        key = (task_id, url)
        if (
            key in self.progress_keys
        ):  # two identical series would make Prometheus reject the scrape
            self.anomalies["duplicate_url"] += 1
            return
        self.progress_keys.add(key)
        self.url_progress.append(UnfinishedUrl(task_id, url, min(1.0, max(0.0, progress / 100))))
