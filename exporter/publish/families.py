"""One kind's families of target series, filled from the targets' summaries.

The collector decides what each target's outcome is (a summary, or a failure); this module
only writes outcomes as samples, in the contract's order (exporter/metrics.py): health
always, figures only from a successful collection.
"""

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.collection.sync import Collection
from exporter.gateway.answers import FINISHED, STATUSES
from exporter.metrics import TargetFamilies, new_family
from exporter.publish.exposition import GaugeRuns
from exporter.summary.target_summary import ANOMALIES, TargetSummary

# A series as (*its label values after the target's, its value): an UnfinishedUrl is one.
Row = tuple[Any, ...]


class SeriesMemo:
    """The samples of the families that grow with the data, kept from one scrape to the next.

    A series whose label values and value are those of the last scrape gets the very
    Sample it had, which the exposition writes from the line it keeps for that Sample
    (see :mod:`exporter.publish.exposition`): a target's thousand progress series then cost a
    lookup each, not a Sample, a label dict and a line. The values of these families
    (ratios, seconds, counts) are never -0.0, the one float equal to another that is
    written differently.
    """

    def __init__(self) -> None:
        self._samples: dict[tuple[str, ...], dict[Row, Sample]] = {}
        # By the id of a run of rows: the run itself (so that its id is not reused) and
        # the tuple of Samples made of it.
        self._runs: dict[tuple[str, ...], dict[int, tuple[Sequence[Row], tuple[Sample, ...]]]] = {}
        self._lock = threading.Lock()

    def add(self, family: GaugeMetricFamily, labels: list[str], rows: Iterable[Row]) -> None:
        """Add ``rows`` as ``family``'s samples of the target ``labels``."""
        key = (family.name, *labels)
        with self._lock:
            known = self._samples.get(key, {})
        kept: dict[Row, Sample] = {}
        samples = list(_samples_of(family, labels, rows, known, kept))  # made, then placed
        family.samples.extend(samples)
        with self._lock:
            self._samples[key] = kept

    def add_runs(self, family: GaugeRuns, labels: list[str], runs: Iterable[Sequence[Row]]) -> None:
        """Add ``runs`` of rows as ``family``'s samples of the target ``labels``.

        A run that is the very object of the last scrape gets the very tuple of Samples
        it had, which the exposition writes from the text it kept; the rows of any other
        run are looked up one by one among those of runs made so last time.
        """
        key = (family.name, *labels)
        with self._lock:
            known_runs = self._runs.get(key, {})
            known = self._samples.get(key, {})
        kept_runs: dict[int, tuple[Sequence[Row], tuple[Sample, ...]]] = {}
        kept: dict[Row, Sample] = {}
        for run in runs:
            entry = known_runs.get(id(run))
            if entry is None or entry[0] is not run:
                entry = (run, tuple(_samples_of(family, labels, run, known, kept)))
            kept_runs[id(run)] = entry
            family.add_run(entry[1])
        with self._lock:
            self._runs[key] = kept_runs
            self._samples[key] = kept


def _samples_of(
    family: GaugeMetricFamily,
    labels: list[str],
    rows: Iterable[Row],
    known: dict[Row, Sample],
    kept: dict[Row, Sample],
) -> Iterator[Sample]:
    """A Sample for each row: the one ``known`` has for it, else a new one; all ``kept``."""
    for row in rows:
        sample = known.get(row)
        if sample is None:
            family.add_metric([*labels, *row[:-1]], row[-1])
            sample = family.samples.pop()  # made here, placed by the caller
        kept[row] = sample
        yield sample


@dataclass(frozen=True)
class TargetFamilyBuilder:
    """One scrape's families of target series, in exposition order."""

    up: GaugeMetricFamily
    scrape_duration: GaugeMetricFamily
    last_success: GaugeMetricFamily
    tasks: GaugeMetricFamily
    urls: GaugeMetricFamily
    url_progress: GaugeRuns
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
        """Empty families; ``cache_note`` is appended to the HELP of metrics a cache can age."""
        return cls(
            up=new_family(contract.up, GaugeMetricFamily, cache_note),
            scrape_duration=new_family(contract.scrape_duration, GaugeMetricFamily, cache_note),
            last_success=new_family(contract.last_success, GaugeMetricFamily, cache_note),
            tasks=new_family(contract.tasks, GaugeMetricFamily, cache_note),
            urls=new_family(contract.urls, GaugeMetricFamily, cache_note),
            url_progress=new_family(contract.url_progress, GaugeRuns, cache_note),
            url_series_dropped=new_family(
                contract.url_series_dropped, GaugeMetricFamily, cache_note
            ),
            url_completion=new_family(
                contract.url_completion, GaugeHistogramMetricFamily, cache_note
            ),
            task_completion=new_family(contract.task_completion, GaugeMetricFamily, cache_note),
            oldest_unfinished=new_family(contract.oldest_unfinished, GaugeMetricFamily, cache_note),
            records_invalid=new_family(contract.records_invalid, GaugeMetricFamily, cache_note),
            domain_urls=new_family(contract.domain_urls, GaugeMetricFamily, cache_note),
            urls_finished=new_family(contract.urls_finished, CounterMetricFamily, cache_note),
            tasks_finished=new_family(contract.tasks_finished, CounterMetricFamily, cache_note),
            collection_requests=new_family(
                contract.collection_requests, GaugeMetricFamily, cache_note
            ),
            last_full_sync=new_family(contract.last_full_sync, GaugeMetricFamily, cache_note),
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
        memo: SeriesMemo,
    ) -> None:
        """Add one target's samples: health always, data only from a successful collection.

        ``memo`` keeps the samples of the largest families from one scrape to the next.
        """
        self.up.add_metric(labels, 1 if collection else 0)
        self.scrape_duration.add_metric(labels, seconds)
        if last_success is not None:
            self.last_success.add_metric(labels, last_success)
        if collection is not None:
            self.add_summary(labels, collection.summary, memo)
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

    def add_summary(self, labels: list[str], summary: TargetSummary, memo: SeriesMemo) -> None:
        """Add the figures of one target's summary."""
        for status in STATUSES:
            self.tasks.add_metric([*labels, status], summary.tasks_by_status[status])
            self.urls.add_metric([*labels, status], summary.urls_by_status[status])
        memo.add_runs(self.url_progress, labels, summary.url_progress_runs)
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
        memo.add(self.task_completion, labels, newest.items())
        if summary.oldest_unfinished_created is not None:
            self.oldest_unfinished.add_metric(labels, summary.oldest_unfinished_created)
        for reason in ANOMALIES:
            self.records_invalid.add_metric([*labels, reason], summary.anomalies[reason])
        memo.add(
            self.domain_urls,
            labels,
            [
                (domain, status, counts[status])
                for domain, counts in sorted(summary.domain_urls.items())
                for status in STATUSES
            ],
        )


def go_float(value: float) -> str:
    """A float as Prometheus client libraries write it (``10.0``, ``+Inf``)."""
    return str(floatToGoString(value))
