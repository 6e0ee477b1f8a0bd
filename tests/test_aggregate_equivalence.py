"""The column-wise ``summarize`` must publish exactly what the one-URL-at-a-time reference does.

``summarize_reference`` states the metric contract plainly; ``summarize`` is the fast
path the exporter runs (see benchmarks/). Any difference, on clean, generated, demo or
deliberately dirty data, would change a published number, so every field is compared.
"""

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.aggregate import (
    Summarizer,
    SummaryLimits,
    TargetSummary,
    summarize,
    summarize_reference,
)
from exporter.client import TaskWindow
from exporter.model import TaskInfo, decode_response
from exporter.simulator import LiveDataset, generate_tasks

NOW = 1_700_000_000
FIXTURE = Path(__file__).parent / "fixtures" / "sample-response.json"


def assert_same(window: TaskWindow, limits: SummaryLimits) -> TargetSummary:
    fast = summarize(window, limits)
    reference = summarize_reference(window, limits)
    assert fast == reference
    for status, histogram in fast.url_completion.items():  # floats: equal, and equally typed
        assert type(histogram.total) is type(reference.url_completion[status].total)
    return fast


def window_of(tasks: list[Any], duplicates: int = 0, total: int | None = None) -> TaskWindow:
    """The window the client would build from ``tasks`` as the API writes them."""
    return TaskWindow(msgspec.convert(tasks, list[TaskInfo]), duplicates, total, 1)


def test_generated_benchmark_data() -> None:
    tasks = generate_tasks(300, 20, now=NOW, seed=3)
    summary = assert_same(window_of(tasks, 2, 301), SummaryLimits(max_url_series=200))
    assert summary.url_series_dropped > 0  # the cap is exercised
    assert sum(summary.urls_by_status.values()) == 6000


def test_demo_world_with_its_anomalies() -> None:
    tasks = LiveDataset(seed=5, clock=lambda: NOW).tasks(("", False), NOW - 86400, NOW)
    summary = assert_same(window_of(list(tasks)), SummaryLimits(max_url_series=50))
    assert summary.anomalies["unknown_status"] > 0


def test_provider_sample() -> None:
    answer = decode_response(FIXTURE.read_bytes())
    assert_same(window_of(answer.task_list, 0, answer.total_count), SummaryLimits())


def test_tiny_caps_and_unsorted_buckets() -> None:
    tasks = json.loads(json.dumps(generate_tasks(40, 5, now=NOW, seed=9)))
    assert_same(window_of(tasks), SummaryLimits(max_url_series=0, max_task_series=0))
    assert_same(window_of(tasks), SummaryLimits(buckets=(600.0, 10.0)))
    assert_same(window_of(tasks), SummaryLimits(buckets=(math.nan, 10.0)))
    assert_same(window_of([]), SummaryLimits())


def test_sums_beyond_exact_floats_take_the_reference_path() -> None:
    url = {"Url": "u", "CreateTime": 1, "FinishTime": 2**60, "Status": "success", "Progress": 100}
    task = {"TaskId": "t", "CreateTime": 1, "Status": "success", "UrlLists": [url, dict(url)]}
    assert_same(window_of([task]), SummaryLimits())


_statuses = st.sampled_from(
    ["success", "failure", "wait", "process", "unknow", "unknown", "odd", None]
)
_times = st.one_of(st.integers(-5, 40), st.just(0), st.integers(NOW - 100, NOW))


@st.composite
def _url(draw: st.DrawFn) -> dict[str, Any]:
    url: dict[str, Any] = {}
    for key, values in (
        ("Url", st.sampled_from(["a", "b", "c"])),
        ("CreateTime", _times),
        ("FinishTime", _times),
        ("Status", _statuses),
        ("Progress", st.integers(-10, 120)),
    ):
        value = draw(values)
        if value is not None and draw(st.booleans()) | (key == "Status"):
            url[key] = value
    return url


@st.composite
def _task(draw: st.DrawFn) -> dict[str, Any]:
    task: dict[str, Any] = {"TaskId": draw(st.sampled_from(["t1", "t2", "t3", "t4"]))}
    if draw(st.booleans()):
        task["CreateTime"] = draw(_times)
    status = draw(_statuses)
    if status is not None:
        task["Status"] = status
    if draw(st.integers(0, 4)):
        task["UrlLists"] = draw(st.lists(_url(), max_size=6))
    return task


@settings(max_examples=400, deadline=None)
@given(
    tasks=st.lists(_task(), max_size=8),
    max_urls=st.integers(0, 6),
    max_tasks=st.integers(0, 3),
    buckets=st.sampled_from([(10.0, 30.0), (1.0,), (5.0, 20.0, 1e9)]),
)
def test_any_dirty_data(
    tasks: list[dict[str, Any]], max_urls: int, max_tasks: int, buckets: tuple[float, ...]
) -> None:
    limits = SummaryLimits(max_url_series=max_urls, max_task_series=max_tasks, buckets=buckets)
    assert_same(window_of(tasks, 1, 3), limits)


def summary_by_pages(window: TaskWindow, limits: SummaryLimits, cuts: list[int]) -> TargetSummary:
    """The window fed to a Summarizer in pages that end at ``cuts``, as the client would."""
    summarizer = Summarizer(limits)
    ends = sorted({min(cut, len(window.tasks)) for cut in cuts})
    for start, stop in pairwise([0, *ends, len(window.tasks)]):
        summarizer.add_page(window.tasks[start:stop])
    return summarizer.summary(window)


def test_pages_of_generated_data_add_up_to_the_window() -> None:
    window = window_of(generate_tasks(300, 20, now=NOW, seed=4), 0, 300)
    limits = SummaryLimits(max_url_series=200)
    by_pages = summary_by_pages(window, limits, list(range(0, 300, 37)))
    assert by_pages == summarize_reference(window, limits)
    assert by_pages.url_series_dropped > 0


@settings(max_examples=300, deadline=None)
@given(
    tasks=st.lists(_task(), max_size=10),
    cuts=st.lists(st.integers(0, 10), max_size=4),
    max_urls=st.integers(0, 6),
    max_tasks=st.integers(0, 3),
    buckets=st.sampled_from([(10.0, 30.0), (1.0,), (5.0, 20.0, 1e9)]),
)
def test_any_dirty_data_in_any_pages(
    tasks: list[dict[str, Any]],
    cuts: list[int],
    max_urls: int,
    max_tasks: int,
    buckets: tuple[float, ...],
) -> None:
    limits = SummaryLimits(max_url_series=max_urls, max_task_series=max_tasks, buckets=buckets)
    window = window_of(tasks, 2, 5)
    assert summary_by_pages(window, limits, cuts) == summarize_reference(window, limits)
