"""The metric contract stated plainly, one task and one URL at a time: the tests' oracle.

``exporter.summary.target_summary.summarize`` computes the same figures by columns, for speed; this
states what they are, as simply as possible, so that the equivalence and property tests
can compare the two on any input. It shares only the public containers with the
product (``Histogram``, ``TargetSummary``, ``SummaryLimits``, ``bounded_label_value``),
not its status mapping or its arithmetic.
"""

from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

from exporter.gateway.answers import STATUSES, TaskInfo, UrlProgress
from exporter.gateway.paging import TaskWindow
from exporter.summary.histogram import Histogram
from exporter.summary.labels import bounded_label_value
from exporter.summary.target_summary import ANOMALIES, SummaryLimits, TargetSummary, UnfinishedUrl

# ``unknow`` is the API's documented spelling; anything else unlisted is an anomaly.
STATUS_OF = {
    "success": "success",
    "wait": "wait",
    "process": "process",
    "failure": "failure",
    "unknow": "unknown",
    "unknown": "unknown",
}
FINISHED = ("failure", "success")  # the statuses with a completion histogram, sorted
UNFINISHED = ("wait", "process")


def summarize_reference(window: TaskWindow, limits: SummaryLimits) -> TargetSummary:
    """What ``summarize`` must publish for ``window``: newest tasks first where caps apply."""
    builder = _Builder(limits)
    for task in sorted(window.decoded(), key=lambda task: (-task.create_time, task.task_id or "")):
        builder.add_task(task)
    summary = builder.summary()
    summary.domain_urls = {}
    for domain, row in capped_domains(builder.domain_counts, limits.max_domain_series).items():
        # Bounded as every label value; a domain whose value is another's cut one joins it.
        label = builder.bounded(domain)
        summary.anomalies["label_value_truncated"] += label != domain
        published = summary.domain_urls.setdefault(label, dict.fromkeys(STATUSES, 0))
        for status, count in row.items():
            published[status] += count
    summary.anomalies["duplicate_task"] = window.duplicate_tasks
    if window.total_count is not None and window.total_count != len(window.tasks):
        summary.anomalies["total_count_mismatch"] = 1
    return summary


def domain_of(url: str) -> str:
    """The URL's host as ``urlsplit`` reads it (lower case, no port); ``_other`` if none."""
    try:
        return urlsplit(url).hostname or "_other"
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "_other"


def capped_domains(counts: dict[str, Counter[str]], max_domains: int) -> dict[str, dict[str, int]]:
    """The ``max_domains`` domains with most URLs (ties by name), then ``_other``: the rest."""
    named = sorted(
        (domain for domain in counts if domain != "_other"),
        key=lambda domain: (-counts[domain].total(), domain),
    )
    published = {domain: _all_statuses(counts[domain]) for domain in named[:max_domains]}
    rest: Counter[str] = Counter(counts.get("_other", Counter()))
    for domain in named[max_domains:]:
        rest += counts[domain]
    if "_other" in counts or named[max_domains:]:
        published["_other"] = _all_statuses(rest)
    return published


def _all_statuses(counts: Counter[str]) -> dict[str, int]:
    return {status: counts[status] for status in STATUSES}


class _Builder:
    """The running figures while tasks are added one by one."""

    def __init__(self, limits: SummaryLimits) -> None:
        self.limits = limits
        self.tasks_by_status = dict.fromkeys(STATUSES, 0)
        self.urls_by_status = dict.fromkeys(STATUSES, 0)
        self.anomalies = dict.fromkeys(ANOMALIES, 0)
        self.url_progress: list[UnfinishedUrl] = []
        self.progress_keys: set[tuple[str, str]] = set()
        self.url_series_dropped = 0
        self.url_completion = {status: Histogram(limits.buckets) for status in FINISHED}
        # Exact integer sums: a histogram's sum is the nearest float to the exact sum.
        self.completion_sums = dict.fromkeys(FINISHED, 0)
        self.task_completion: list[tuple[str, float]] = []
        self.oldest_unfinished: int | None = None
        self.domain_counts: dict[str, Counter[str]] = {}

    def summary(self) -> TargetSummary:
        for status, total in self.completion_sums.items():
            self.url_completion[status].total = float(total)
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
        status: str | None = STATUS_OF.get(raw)  # type: ignore[call-overload]
        if status is None:
            self.anomalies["unknown_status"] += 1
            return "unknown"
        return status

    def add_task(self, task: TaskInfo) -> None:
        status = self.status_of(task.status)
        self.tasks_by_status[status] += 1
        created = task.create_time
        task_id = task.task_id or ""
        if (
            status in UNFINISHED
            and created > 0
            and (self.oldest_unfinished is None or created < self.oldest_unfinished)
        ):
            self.oldest_unfinished = created
        latest_finish = self.add_urls(task_id, created, task.url_lists)
        if (
            status in FINISHED
            and latest_finish >= created
            and latest_finish > 0
            and len(self.task_completion) < self.limits.max_task_series
        ):
            self.add_task_completion(task_id, float(latest_finish - created))

    def add_urls(self, task_id: str, task_created: int, urls: Sequence[UrlProgress]) -> int:
        """Count the task's URLs; return the latest valid FinishTime among them (0 if none)."""
        latest_finish = 0
        for url in urls:
            status = self.status_of(url.status)
            self.urls_by_status[status] += 1
            self.domain_counts.setdefault(domain_of(url.url), Counter())[status] += 1
            if not 0 <= url.progress <= 100:
                self.anomalies["progress_out_of_range"] += 1
            finish = url.finish_time
            created = url.create_time or task_created  # no CreateTime of its own: the task's
            # FinishTime 0 means "not finished": neither late nor a completion.
            if finish != 0 and finish < created:
                self.anomalies["finish_before_create"] += 1
            if status not in FINISHED:
                self.add_progress(task_id, url.url, url.progress)
            elif finish != 0 and finish >= created:
                self.url_completion[status].observe(finish - created)
                self.completion_sums[status] += finish - created
                latest_finish = max(latest_finish, finish)
        return latest_finish

    def add_progress(self, task_id: str, url: str, progress: int) -> None:
        if len(self.url_progress) >= self.limits.max_url_series:
            self.url_series_dropped += 1
            return
        key = (self.bounded(task_id), self.bounded(url))
        if key in self.progress_keys:  # two identical series: Prometheus rejects the scrape
            self.anomalies["duplicate_url"] += 1
            return
        self.progress_keys.add(key)
        self.anomalies["label_value_truncated"] += (key[0] != task_id) + (key[1] != url)
        ratio = min(1.0, max(0.0, progress / 100))
        self.url_progress.append(UnfinishedUrl(key[0], key[1], ratio))

    def add_task_completion(self, task_id: str, seconds: float) -> None:
        label = self.bounded(task_id)
        self.anomalies["label_value_truncated"] += label != task_id
        self.task_completion.append((label, seconds))

    def bounded(self, value: str) -> str:
        return bounded_label_value(value, self.limits.max_label_value_length)
