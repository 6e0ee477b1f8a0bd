"""One kind's families of target series, filled from the targets' summaries.

The collector decides what each target's result is (a summary, or a failure); this module
only writes results as samples, in the contract's order (exporter/metrics.py): health
always, figures only from a successful collection.
"""

from dataclasses import dataclass, fields

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from exporter.collection.sync import Collection
from exporter.gateway.answers import FINISHED, STATUSES
from exporter.metrics import TargetFamilies
from exporter.summary.target_summary import ANOMALIES, TargetSummary


@dataclass(frozen=True)
class TargetFamilyBuilder:
    """One scrape's families of target series, in exposition order."""

    up: GaugeMetricFamily
    scrape_duration: GaugeMetricFamily
    last_success: GaugeMetricFamily
    tasks: GaugeMetricFamily
    urls: GaugeMetricFamily
    url_progress: GaugeMetricFamily
    url_series_dropped: GaugeMetricFamily
    url_completion: GaugeHistogramMetricFamily
    task_completion: GaugeMetricFamily
    oldest_unfinished: GaugeMetricFamily
    records_invalid: GaugeMetricFamily
    domain_urls: GaugeMetricFamily
    urls_finished: CounterMetricFamily
    tasks_finished: CounterMetricFamily
    collection_requests: GaugeMetricFamily
    last_full_sync: GaugeMetricFamily

    @classmethod
    def new(cls, contract: TargetFamilies, cache_note: str) -> "TargetFamilyBuilder":
        """Empty families, each the contract's of its name, built as its field's class (a
        TypeError if the two disagree: a bug); ``cache_note`` is appended to the HELP of
        metrics a cache can age."""
        return cls(
            **{
                field.name: getattr(contract, field.name).new(field.type, cache_note)
                for field in fields(cls)
            }
        )

    def all(self) -> list[Metric]:
        """Every family, in declaration order."""
        return [getattr(self, field.name) for field in fields(self)]

    def add_target(
        self,
        labels: list[str],
        seconds: float,
        last_success: float | None,
        collection: Collection | None,
    ) -> None:
        """Add one target's samples: health always, data only from a successful collection."""
        self.up.add_metric(labels, 1 if collection else 0)
        self.scrape_duration.add_metric(labels, seconds)
        if last_success is not None:
            self.last_success.add_metric(labels, last_success)
        if collection is not None:
            self.add_summary(labels, collection.summary)
            self.add_sync(labels, collection)

    def add_sync(self, labels: list[str], collection: Collection) -> None:
        """Add what the collection cost, and the counters of finished work."""
        self.collection_requests.add_metric([*labels, collection.sync], collection.requests)
        if collection.last_full_sync is not None:
            self.last_full_sync.add_metric(labels, collection.last_full_sync)
        counts = collection.counts
        if counts is not None:
            for status in sorted(FINISHED):
                self.urls_finished.add_metric(
                    [*labels, status], counts.urls[status], created=counts.created
                )
                self.tasks_finished.add_metric(
                    [*labels, status], counts.tasks[status], created=counts.created
                )

    def add_summary(self, labels: list[str], summary: TargetSummary) -> None:
        """Add the figures of one target's summary."""
        for status in STATUSES:
            self.tasks.add_metric([*labels, status], summary.tasks_by_status[status])
            self.urls.add_metric([*labels, status], summary.urls_by_status[status])
        for task_id, url, ratio in summary.url_progress:
            self.url_progress.add_metric([*labels, task_id, url], ratio)
        self.url_series_dropped.add_metric(labels, summary.url_series_dropped)
        for status in sorted(FINISHED):
            histogram = summary.url_completion[status]
            buckets = [(go_float(le), count) for le, count in histogram.cumulative()]
            self.url_completion.add_metric([*labels, status], buckets, histogram.total)
        # Tasks without a TaskId all become task_id="": a repeated series would make
        # Prometheus reject the whole scrape, so only the newest of them is published.
        newest: dict[str, float] = {}
        for task_id, seconds in summary.task_completion:
            newest.setdefault(task_id, seconds)
        for task_id, seconds in newest.items():
            self.task_completion.add_metric([*labels, task_id], seconds)
        if summary.oldest_unfinished_created is not None:
            self.oldest_unfinished.add_metric(labels, summary.oldest_unfinished_created)
        for reason in ANOMALIES:
            self.records_invalid.add_metric([*labels, reason], summary.anomalies[reason])
        for domain, counts in sorted(summary.domain_urls.items()):
            for status in STATUSES:
                self.domain_urls.add_metric([*labels, domain, status], counts[status])


def go_float(value: float) -> str:
    """A float as Prometheus client libraries write it (``10.0``, ``+Inf``)."""
    return str(floatToGoString(value))
