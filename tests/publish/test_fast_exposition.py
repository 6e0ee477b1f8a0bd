"""exporter.publish.exposition writes, byte for byte, what prometheus_client's encoders write.

Random families of every type the exporter publishes (and those it does not, which the
fallback must take), with label values full of what needs escaping, values at the
edges of floats, names prometheus_client would escape, timestamps: for each Accept
header Prometheus or a person sends, the body and content type must be those of
``choose_encoder``'s encoder, on a first scrape and on the next (from remembered lines).
"""

import math

from conftest import FAST_EXAMPLES, examples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder

from exporter.publish.exposition import Exposition, GaugeRuns, MetricsSnapshot
from exporter.publish.families import SeriesMemo
from exporter.summary.target_summary import UnfinishedUrl

ACCEPTS = (
    "",
    "*/*",
    "text/plain;version=0.0.4",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",  # Prometheus 2.x
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=2.0.0",
    "text/plain;version=1.0.0;escaping=underscores",
)
NAMES = st.sampled_from(["ucdn_prefetch_tasks", "up", "a_b", "colon:name", "dot.name", "_x1"])
LABEL_NAMES = st.lists(
    st.sampled_from(["project_id", "platform", "url", "le", "b", "weird.label"]),
    unique=True,
    max_size=3,
)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0.0, -0.0, 0, 1e22, 123456789.0, 5e-324]),
)
LABEL_VALUES = st.text(
    alphabet=st.sampled_from(["a", '"', "\\", "\n", "é", "…", "/", "{", "}", "=", ",", " "]),
    max_size=8,
)
DOCUMENTATION = st.text(alphabet=st.sampled_from(["d", '"', "\\", "\n", "é", " "]), max_size=12)


@st.composite
def families(draw: st.DrawFn) -> Metric:
    kind = draw(
        st.sampled_from(
            [
                *("gauge", "runs", "counter", "gaugehistogram", "histogram"),
                *("info", "stateset", "unknown"),
            ]
        )
    )
    name = draw(NAMES)
    documentation = draw(DOCUMENTATION)
    labels = draw(LABEL_NAMES)
    rows = draw(
        st.lists(
            st.lists(LABEL_VALUES, min_size=len(labels), max_size=len(labels)),
            max_size=4,
            unique_by=tuple,
        )
    )
    timestamp = draw(st.one_of(st.none(), st.just(1_700_000_000.5)))
    family: Metric
    if kind == "gauge":
        family = GaugeMetricFamily(
            name,
            documentation,
            labels=labels,
            unit=draw(st.sampled_from(["", "seconds"])) if name.endswith("seconds") else "",
        )
        for row in rows:
            family.add_metric(row, draw(VALUES), timestamp)
    elif kind == "runs":
        family = GaugeRuns(name, documentation, labels)
        source = GaugeMetricFamily(name, documentation, labels=labels)
        for row in rows:
            source.add_metric(row, draw(VALUES), timestamp)
        cut = draw(st.integers(0, len(source.samples)))
        for run in (source.samples[:cut], source.samples[cut:]):
            family.add_run(tuple(run))
        outside: bool = draw(st.booleans())
        if rows and outside:  # a sample outside the runs: written one by one
            family.add_metric(rows[0], draw(VALUES))
    elif kind == "counter":
        family = CounterMetricFamily(name, documentation, labels=labels)
        for row in rows:
            created = draw(st.one_of(st.none(), st.floats(0, 2e9)))
            family.add_metric(row, draw(VALUES), created=created, timestamp=timestamp)
    elif kind in ("gaugehistogram", "histogram"):
        cls = GaugeHistogramMetricFamily if kind == "gaugehistogram" else HistogramMetricFamily
        family = cls(name, documentation, labels=labels)
        for row in rows:
            buckets = [("10.0", draw(VALUES)), ("+Inf", draw(VALUES))]
            if kind == "gaugehistogram":
                family.add_metric(row, buckets, draw(VALUES), timestamp)
            else:
                family.add_metric(row, buckets, draw(VALUES), timestamp)
    elif kind == "info":
        family = InfoMetricFamily(name, documentation, labels=labels)
        for row in rows:
            family.add_metric(row, {"version": draw(LABEL_VALUES)}, timestamp)
    elif kind == "stateset":
        family = StateSetMetricFamily(name, documentation, labels=labels)
        for row in rows:
            family.add_metric(row, {"on": draw(st.booleans())}, timestamp)
    else:
        family = UnknownMetricFamily(name, documentation, labels=labels)
        for row in rows:
            family.add_metric(row, draw(VALUES), timestamp)
    return family


def reference(metrics: list[Metric], accept: str) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept)
    return encoder(MetricsSnapshot(metrics)), content_type


@settings(max_examples=examples(400, fast=FAST_EXAMPLES), deadline=None)
@given(
    st.lists(families(), max_size=5),
    st.lists(families(), max_size=5),
    st.sampled_from(ACCEPTS),
)
def test_the_bytes_are_prometheus_clients_on_a_first_scrape_and_the_next(
    first: list[Metric], second: list[Metric], accept: str
) -> None:
    exposition = Exposition()
    assert exposition.encode(first, accept, "/metrics") == reference(first, accept)
    # The next scrape: some series again (remembered lines), some new, some changed, and
    # runs again in new families, as the collector makes them (remembered runs).
    again = [*first[:2], *(rerun(f) for f in first if isinstance(f, GaugeRuns)), *second]
    assert exposition.encode(again, accept, "/metrics") == reference(again, accept)


def rerun(family: GaugeRuns) -> GaugeRuns:
    """The family of a next scrape: the same runs, the very tuples, in reverse order."""
    again = GaugeRuns(family.name, family.documentation, [])
    for run in reversed(family.runs):
        again.add_run(run)
    return again


def test_zero_and_negative_zero_are_two_lines_though_equal() -> None:
    zero, negative = GaugeMetricFamily("g", "d"), GaugeMetricFamily("g", "d")
    zero.add_metric([], 0.0)
    negative.add_metric([], -0.0)
    exposition = Exposition()
    assert b"g 0.0\n" in exposition.encode([zero], "", "/metrics")[0]
    assert b"g -0.0\n" in exposition.encode([negative], "", "/metrics")[0]
    assert math.copysign(1.0, -0.0) < 0  # the case is real: the two floats compare equal


def test_a_page_keeps_only_the_lines_of_its_last_scrape() -> None:
    exposition = Exposition()
    for value in range(50):
        family = GaugeMetricFamily("g", "d", labels=["n"])
        family.add_metric([str(value)], value)
        exposition.encode([family], "", "/probe?a")
        exposition.encode([GaugeMetricFamily("h", "d")], "", "/probe?b")
    assert [len(lines.by_content) for lines in exposition._lines.values()] == [1, 0]


def progress_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("p", "d", labels=["project_id", "platform", "task_id", "url"])


def test_a_progress_series_keeps_its_sample_until_it_moves() -> None:
    memo = SeriesMemo()
    first, second = progress_family(), progress_family()
    still, moving = UnfinishedUrl("t", "https://a/1", 0.25), UnfinishedUrl("t", "https://a/2", 0.5)
    memo.add(first, ["p", "cdn"], [still, moving])
    memo.add(second, ["p", "cdn"], [still, moving._replace(ratio=0.75)])
    assert second.samples[0] is first.samples[0]
    assert second.samples[1] is not first.samples[1]
    assert second.samples[1].value == 0.75
    # A target's samples are its own, and the exposition writes the moved value.
    other = progress_family()
    memo.add(other, ["q", "cdn"], [still])
    assert other.samples[0].labels["project_id"] == "q"
    exposition = Exposition()
    exposition.encode([first], "", "/metrics")
    body = exposition.encode([second], "", "/metrics")[0]
    assert b'url="https://a/2"} 0.75\n' in body
    assert body == reference([second], "")[0]


def runs_family() -> GaugeRuns:
    return GaugeRuns("p", "d", ["project_id", "platform", "task_id", "url"])


def test_a_run_that_recurs_keeps_its_samples_and_its_text() -> None:
    memo = SeriesMemo()
    task_a = [UnfinishedUrl("a", f"https://a/{i}", 0.5) for i in range(3)]
    task_b = [UnfinishedUrl("b", "https://b/1", 0.0)]
    first, second = runs_family(), runs_family()
    memo.add_runs(first, ["p", "cdn"], [task_a, task_b])
    # a recurs, the very list; b comes as a new list of equal rows, with one more
    moved = [*task_b, UnfinishedUrl("b", "https://b/2", 0.25)]
    memo.add_runs(second, ["p", "cdn"], [task_a, moved])
    assert second.runs[0] is first.runs[0]
    assert second.runs[1] is not first.runs[1]
    assert second.runs[1][0] is first.runs[1][0], "an equal row keeps its Sample"
    assert second.samples == [*second.runs[0], *second.runs[1]]
    exposition = Exposition()
    exposition.encode([first], "", "/metrics")
    kept = exposition._lines["/metrics"].by_run[id(first.runs[0])]
    body = exposition.encode([second], "", "/metrics")[0]
    assert exposition._lines["/metrics"].by_run[id(second.runs[0])] is kept
    assert body == reference([second], "")[0]
    assert b'url="https://b/2"} 0.25\n' in body
