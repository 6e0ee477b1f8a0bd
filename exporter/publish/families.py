"""One kind's families of target series, filled from the targets' results a family at a time.

The collector decides what each target's result is (a summary, or a failure); this module
only writes results as samples, in the contract's order (exporter/metrics.py): health
always, figures only from a successful collection.

The families come one at a time, each filled from every target before the next is made,
so that a scrape encoded as it goes holds one family's samples, never all of them: at two
thousand targets a scrape is some 200,000 samples, about a hundred megabytes as Python
objects, and its largest family a tenth of that.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Final, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from exporter.collection.sync import Collection
from exporter.gateway.answers import FINISHED, STATUSES
from exporter.metrics import Family, TargetFamilies
from exporter.summary.target_summary import ANOMALIES, TargetSummary

_M = TypeVar("_M", bound=Metric)


@dataclass(frozen=True)
class TargetRow:
    """One target's part of a scrape: its labels, how long its collection took, when it last
    succeeded, and the collection it publishes (None: health alone)."""

    labels: list[str]
    seconds: float
    last_success: float | None
    collection: Collection | None

    @property
    def summary(self) -> TargetSummary | None:
        """The figures to publish, if any."""
        return None if self.collection is None else self.collection.summary


def target_families(
    contract: TargetFamilies, cache_note: str, rows: Sequence[TargetRow]
) -> Iterator[Metric]:
    """Every family of ``contract`` in exposition order, each filled from all ``rows`` when
    it is asked for; ``cache_note`` is appended to the HELP of metrics a cache can age."""
    for field in fields(contract):
        yield FILLS[field.name](getattr(contract, field.name), cache_note, rows)


_Fill = Callable[[Family, str, Sequence[TargetRow]], Metric]


def _each(family_class: type[_M], write: Callable[[_M, TargetRow], None]) -> _Fill:
    """A family as ``family_class`` (a TypeError if the contract disagrees: a bug), with
    ``write`` adding each row's samples."""

    def fill(family: Family, cache_note: str, rows: Sequence[TargetRow]) -> Metric:
        metric = family.new(family_class, cache_note)
        for row in rows:
            write(metric, row)
        return metric

    return fill


def _up(metric: GaugeMetricFamily, row: TargetRow) -> None:
    metric.add_metric(row.labels, 1 if row.collection else 0)


def _scrape_duration(metric: GaugeMetricFamily, row: TargetRow) -> None:
    metric.add_metric(row.labels, row.seconds)


def _last_success(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if row.last_success is not None:
        metric.add_metric(row.labels, row.last_success)


def _tasks(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        for status in STATUSES:
            metric.add_metric([*row.labels, status], summary.tasks_by_status[status])


def _urls(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        for status in STATUSES:
            metric.add_metric([*row.labels, status], summary.urls_by_status[status])


def _url_progress(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        for task_id, url, ratio in summary.url_progress:
            metric.add_metric([*row.labels, task_id, url], ratio)


def _url_series_dropped(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        metric.add_metric(row.labels, summary.url_series_dropped)


def _url_completion(metric: GaugeHistogramMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        for status in sorted(FINISHED):
            histogram = summary.url_completion[status]
            buckets = [(go_float(le), count) for le, count in histogram.cumulative()]
            metric.add_metric([*row.labels, status], buckets, histogram.total)


def _task_completion(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        # Tasks without a TaskId all become task_id="": a repeated series would make
        # Prometheus reject the whole scrape, so only the newest of them is published.
        newest: dict[str, float] = {}
        for task_id, seconds in summary.task_completion:
            newest.setdefault(task_id, seconds)
        for task_id, seconds in newest.items():
            metric.add_metric([*row.labels, task_id], seconds)


def _oldest_unfinished(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None and summary.oldest_unfinished_created is not None:
        metric.add_metric(row.labels, summary.oldest_unfinished_created)


def _records_invalid(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        for reason in ANOMALIES:
            metric.add_metric([*row.labels, reason], summary.anomalies[reason])


def _domain_urls(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (summary := row.summary) is not None:
        for domain, counts in sorted(summary.domain_urls.items()):
            for status in STATUSES:
                metric.add_metric([*row.labels, domain, status], counts[status])


def _urls_finished(metric: CounterMetricFamily, row: TargetRow) -> None:
    if row.collection is not None and (counts := row.collection.counts) is not None:
        for status in sorted(FINISHED):
            metric.add_metric([*row.labels, status], counts.urls[status], created=counts.created)


def _tasks_finished(metric: CounterMetricFamily, row: TargetRow) -> None:
    if row.collection is not None and (counts := row.collection.counts) is not None:
        for status in sorted(FINISHED):
            metric.add_metric([*row.labels, status], counts.tasks[status], created=counts.created)


def _collection_requests(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (collection := row.collection) is not None:
        metric.add_metric([*row.labels, collection.sync], collection.requests)


def _last_full_sync(metric: GaugeMetricFamily, row: TargetRow) -> None:
    if (collection := row.collection) is not None and collection.last_full_sync is not None:
        metric.add_metric(row.labels, collection.last_full_sync)


# How each family of the contract is filled, by its field's name in TargetFamilies.
FILLS: Final[dict[str, _Fill]] = {
    "up": _each(GaugeMetricFamily, _up),
    "scrape_duration": _each(GaugeMetricFamily, _scrape_duration),
    "last_success": _each(GaugeMetricFamily, _last_success),
    "tasks": _each(GaugeMetricFamily, _tasks),
    "urls": _each(GaugeMetricFamily, _urls),
    "url_progress": _each(GaugeMetricFamily, _url_progress),
    "url_series_dropped": _each(GaugeMetricFamily, _url_series_dropped),
    "url_completion": _each(GaugeHistogramMetricFamily, _url_completion),
    "task_completion": _each(GaugeMetricFamily, _task_completion),
    "oldest_unfinished": _each(GaugeMetricFamily, _oldest_unfinished),
    "records_invalid": _each(GaugeMetricFamily, _records_invalid),
    "domain_urls": _each(GaugeMetricFamily, _domain_urls),
    "urls_finished": _each(CounterMetricFamily, _urls_finished),
    "tasks_finished": _each(CounterMetricFamily, _tasks_finished),
    "collection_requests": _each(GaugeMetricFamily, _collection_requests),
    "last_full_sync": _each(GaugeMetricFamily, _last_full_sync),
}


def go_float(value: float) -> str:
    """A float as Prometheus client libraries write it (``10.0``, ``+Inf``)."""
    return str(floatToGoString(value))
