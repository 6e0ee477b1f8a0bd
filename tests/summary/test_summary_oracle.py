"""The column-wise ``summarize`` must publish exactly what the one-URL-at-a-time oracle does.

``tests/reference.py`` states the metric contract plainly; ``summarize`` is the only
implementation the exporter runs (see benchmarks/). Any difference, on clean, generated,
demo or deliberately dirty data, would change a published number, so every field is
compared. The random tests count the cases that hit each input the summary once handed
to a slower path (a CreateTime of 0 or less, sums beyond a float's exact integers,
unsorted buckets) and fail unless each was generated, so they cannot pass by comparing
easy cases only.
"""

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import FINISHED, STATUS_OF, domain_of, summarize_reference

from exporter.gateway.answers import TaskInfo, decode_response
from exporter.gateway.paging import TaskWindow
from exporter.simulator.live import LiveDataset
from exporter.simulator.static import generate_tasks
from exporter.summary.target_summary import Summarizer, SummaryLimits, TargetSummary, summarize

NOW = 1_700_000_000
FIXTURE = Path(__file__).parents[1] / "fixtures" / "sample-response.json"


def assert_same(window: TaskWindow, limits: SummaryLimits) -> TargetSummary:
    fast = summarize(window, limits)
    reference = summarize_reference(window, limits)
    assert fast == reference
    assert_domains_add_up(fast)
    for status, histogram in fast.url_completion.items():  # floats: equal, and equally typed
        assert type(histogram.total) is type(reference.url_completion[status].total)
    return fast


def assert_domains_add_up(summary: TargetSummary) -> None:
    """Summed over domains, each status's URLs are exactly its ``urls_by_status``."""
    for status, total in summary.urls_by_status.items():
        assert sum(row[status] for row in summary.domain_urls.values()) == total


def window_of(tasks: list[Any], duplicates: int = 0, total: int | None = None) -> TaskWindow:
    """The window the client would build from ``tasks`` as the API writes them."""
    decoded = msgspec.convert(tasks, list[TaskInfo])
    return TaskWindow(decoded, duplicates, total, 1, len(decoded))


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


def test_sums_beyond_exact_floats_are_the_float_nearest_the_exact_sum() -> None:
    # A float step is 256 here: one at a time, each small time is rounded away; their
    # exact sum, 406, makes the nearest float 2**60 + 512.
    times = [2**60, 100, 101, 102, 103]
    urls = [
        {"Url": f"u{i}", "CreateTime": 1, "FinishTime": 1 + time, "Status": "success"}
        for i, time in enumerate(times)
    ]
    task = {"TaskId": "t", "CreateTime": 1, "Status": "success", "UrlLists": urls}
    summary = assert_same(window_of([task]), SummaryLimits())
    assert summary.url_completion["success"].total == 2**60 + 512


def test_unfinished_urls_created_at_zero_or_before_are_not_late_nor_completed() -> None:
    urls = [
        {"Url": "a", "CreateTime": -5, "Status": "success"},  # FinishTime 0: not finished
        {"Url": "b", "Status": "failure"},  # timed from its task, created at 0
        {"Url": "c", "CreateTime": -5, "FinishTime": -9, "Status": "success"},  # late
        {"Url": "d", "CreateTime": -5, "FinishTime": 5, "Status": "success"},  # 10 s
    ]
    task = {"TaskId": "t", "Status": "success", "UrlLists": urls}
    summary = assert_same(window_of([task]), SummaryLimits())
    assert summary.anomalies["finish_before_create"] == 1
    assert summary.url_completion["success"].count == 1
    assert summary.url_completion["failure"].count == 0


_statuses = st.sampled_from(
    ["success", "failure", "wait", "process", "unknow", "unknown", "odd", None]
)
_times = st.one_of(
    st.integers(-5, 40), st.just(0), st.integers(NOW - 100, NOW), st.integers(2**53, 2**62)
)
# Hosts with capitals, ports, IPv6, userinfo, none at all, one that cannot be read, or one
# longer than a label value may be.
_hosts = st.sampled_from(
    [
        "a.example",
        "A.Example",
        "a.example:8080",
        "b.example",
        "[::1]:80",
        "[::1",
        "u@B.example",
        "h" * 1100 + ".example",
    ]
)
_url_text = st.one_of(
    st.sampled_from(["a", "b", "c", "", "/path", "http:", "http:/x", "mailto:x@y"]),
    st.builds(
        "{}//{}{}".format,
        st.sampled_from(["https:", "http:", "", "HTTP:"]),
        _hosts,
        st.sampled_from(["", "/", "/f", "?q", "#f", "/a/b"]),
    ),
)
_buckets = st.sampled_from([(10.0, 30.0), (1.0,), (5.0, 20.0, 1e9), (30.0, 10.0), (math.nan, 5.0)])

# What each random test must have generated at least once: the inputs the summary used
# to leave to a slower path, and the ordinary case.
CONDITIONS = (
    "url_created_at_zero_or_before",
    "unfinished_url_created_at_zero_or_before",
    "completion_sum_beyond_exact_floats",
    "unsorted_buckets",
    "every_url_created_after_zero",
    "one_host_prefix_in_the_window",
    "several_domains",
    "more_domains_than_the_cap",
    "domains_tied_at_the_cap",
)

# The rarest conditions, given as examples so that the fast lane's few random cases need not
# find them: one host prefix throughout, and two domains tied at a cap of one.
ONE_HOST = [{"TaskId": "t1", "UrlLists": [{"Url": "https://a.example/x", "Status": "wait"}]}]
TIED_HOSTS = [
    {"TaskId": "t1", "UrlLists": [{"Url": "https://a.example/x", "Status": "wait"}]},
    {"TaskId": "t2", "UrlLists": [{"Url": "https://b.example/y", "Status": "success"}]},
]


def conditions(window: TaskWindow, limits: SummaryLimits) -> set[str]:
    """The entries of :data:`CONDITIONS` that ``window`` and ``limits`` hit."""
    hit = set()
    sums = dict.fromkeys(FINISHED, 0)
    for task in window.decoded():
        for url in task.url_lists:
            created = url.create_time or task.create_time
            if created <= 0:
                hit.add("url_created_at_zero_or_before")
                if url.finish_time == 0:
                    hit.add("unfinished_url_created_at_zero_or_before")
            status = STATUS_OF.get(url.status or "")
            if status in sums and url.finish_time and url.finish_time >= created:
                sums[status] += url.finish_time - created
    if max(sums.values()) >= 2**53:
        hit.add("completion_sum_beyond_exact_floats")
    if not all(low < high for low, high in pairwise(limits.buckets)):  # NaN is unsorted too
        hit.add("unsorted_buckets")
    if "url_created_at_zero_or_before" not in hit:
        hit.add("every_url_created_after_zero")
    return hit | domain_conditions(window, limits)


def domain_conditions(window: TaskWindow, limits: SummaryLimits) -> set[str]:
    """Which of the domain cases ``window`` hits: one prefix (the page fast path), caps, ties."""
    urls = [url.url for task in window.decoded() for url in task.url_lists]
    hit = set()
    first = re.match(r"[^/?#]*//[^/?#]*[/?#]", urls[0]) if urls else None
    if first and all(url.startswith(first.group()) for url in urls):
        hit.add("one_host_prefix_in_the_window")
    sizes = Counter(domain_of(url) for url in urls if domain_of(url) != "_other")
    if len(sizes) > 1:
        hit.add("several_domains")
    if len(sizes) > limits.max_domain_series:
        hit.add("more_domains_than_the_cap")
        ranked = sorted(sizes.values(), reverse=True)
        if limits.max_domain_series and (
            ranked[limits.max_domain_series - 1] == ranked[limits.max_domain_series]
        ):
            hit.add("domains_tied_at_the_cap")
    return hit


def assert_every_condition_hit(run: Callable[[Counter[str]], None]) -> None:
    """Run a property test that counts into a Counter; every condition must have counts."""
    seen: Counter[str] = Counter()
    run(seen)
    assert {name: seen[name] for name in CONDITIONS if not seen[name]} == {}, seen


@st.composite
def _url(draw: st.DrawFn) -> dict[str, Any]:
    url: dict[str, Any] = {}
    for key, values in (
        ("Url", _url_text),
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


def test_any_dirty_data() -> None:
    def run(seen: Counter[str]) -> None:
        @settings(max_examples=examples(400, fast=120), deadline=None)
        @example(tasks=ONE_HOST, max_urls=1, max_tasks=1, buckets=(1.0,), max_domains=1)
        @example(tasks=TIED_HOSTS, max_urls=1, max_tasks=1, buckets=(1.0,), max_domains=1)
        @given(
            tasks=st.lists(_task(), max_size=8),
            max_urls=st.integers(0, 6),
            max_tasks=st.integers(0, 3),
            buckets=_buckets,
            max_domains=st.integers(0, 3),
        )
        def check(
            tasks: list[dict[str, Any]],
            max_urls: int,
            max_tasks: int,
            buckets: tuple[float, ...],
            max_domains: int,
        ) -> None:
            limits = SummaryLimits(
                max_url_series=max_urls,
                max_task_series=max_tasks,
                buckets=buckets,
                max_domain_series=max_domains,
            )
            window = window_of(tasks, 1, 3)
            seen.update(conditions(window, limits))
            assert_same(window, limits)

        check()

    assert_every_condition_hit(run)


def summary_by_pages(window: TaskWindow, limits: SummaryLimits, cuts: list[int]) -> TargetSummary:
    """The window fed to a Summarizer in pages that end at ``cuts``, as the client would."""
    summarizer = Summarizer(limits)
    ends = sorted({min(cut, len(window.tasks)) for cut in cuts})
    for start, stop in pairwise([0, *ends, len(window.tasks)]):
        summarizer.add_page(window.decoded()[start:stop])
    return summarizer.summary(window)


def test_pages_of_generated_data_add_up_to_the_window() -> None:
    window = window_of(generate_tasks(300, 20, now=NOW, seed=4), 0, 300)
    limits = SummaryLimits(max_url_series=200)
    by_pages = summary_by_pages(window, limits, list(range(0, 300, 37)))
    assert by_pages == summarize_reference(window, limits)
    assert by_pages.url_series_dropped > 0


def test_any_dirty_data_in_any_pages() -> None:
    def run(seen: Counter[str]) -> None:
        @settings(max_examples=examples(300, fast=100), deadline=None)
        @example(tasks=ONE_HOST, cuts=[], max_urls=1, max_tasks=1, buckets=(1.0,), max_domains=1)
        @example(tasks=TIED_HOSTS, cuts=[1], max_urls=1, max_tasks=1, buckets=(1.0,), max_domains=1)
        @given(
            tasks=st.lists(_task(), max_size=10),
            cuts=st.lists(st.integers(0, 10), max_size=4),
            max_urls=st.integers(0, 6),
            max_tasks=st.integers(0, 3),
            buckets=_buckets,
            max_domains=st.integers(0, 3),
        )
        def check(
            tasks: list[dict[str, Any]],
            cuts: list[int],
            max_urls: int,
            max_tasks: int,
            buckets: tuple[float, ...],
            max_domains: int,
        ) -> None:
            limits = SummaryLimits(
                max_url_series=max_urls,
                max_task_series=max_tasks,
                buckets=buckets,
                max_domain_series=max_domains,
            )
            window = window_of(tasks, 2, 5)
            seen.update(conditions(window, limits))
            by_pages = summary_by_pages(window, limits, cuts)
            assert by_pages == summarize_reference(window, limits)
            assert_domains_add_up(by_pages)

        check()

    assert_every_condition_hit(run)


def test_domains_by_host_capped_with_ties_by_name() -> None:
    def url(text: str, status: str = "success") -> dict[str, Any]:
        return {"Url": text, "CreateTime": 1, "FinishTime": 2, "Status": status}

    urls = [
        url("https://B.example:8443/x"),
        url("http://b.example/y", "wait"),
        url("https://[2001:DB8::1]:80/z"),
        url("https://a.example/"),
        url("https://c.example?q"),
        url("no host", "odd"),
        url("http://[::1/broken"),
    ]
    task = {"TaskId": "t", "CreateTime": 1, "Status": "success", "UrlLists": urls}
    summary = assert_same(window_of([task]), SummaryLimits(max_domain_series=2))
    assert list(summary.domain_urls) == ["b.example", "2001:db8::1", "_other"]
    assert summary.domain_urls["b.example"] == {
        "success": 1,
        "wait": 1,
        "process": 0,
        "failure": 0,
        "unknown": 0,
    }
    assert summary.domain_urls["_other"]["success"] == 3  # a., c. and the broken one
    assert summary.domain_urls["_other"]["unknown"] == 1


def test_tasks_of_one_host_are_counted_by_status() -> None:
    tasks = generate_tasks(50, 10, now=NOW, seed=2)
    summary = assert_same(window_of(tasks), SummaryLimits())
    assert list(summary.domain_urls) == ["cdn.example.com"]


def test_a_first_url_without_host_does_not_name_the_task() -> None:
    urls = [{"Url": "http:", "Status": "wait"}, {"Url": "http://h.example/x", "Status": "wait"}]
    task = {"TaskId": "t", "CreateTime": 1, "Status": "wait", "UrlLists": urls}
    summary = assert_same(window_of([task]), SummaryLimits())
    assert list(summary.domain_urls) == ["h.example", "_other"]
