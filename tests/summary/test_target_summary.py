"""Summaries of one target's tasks: the provider's own dirty sample, caps, buckets and ordering."""

import json
from typing import Any

import msgspec
from conftest import FIXTURES, url_entry

from exporter.gateway.answers import STATUSES, TaskInfo, decode_response
from exporter.gateway.paging import TaskWindow
from exporter.settings.config import Settings
from exporter.summary.target_summary import SummaryLimits, TargetSummary, summarize

SAMPLE_BYTES = (FIXTURES / "sample-response.json").read_bytes()


def window_of(
    tasks: list[dict[str, Any]] | list[TaskInfo], total_count: int | None = None, dupes: int = 0
) -> TaskWindow:
    """The window the client would build from ``tasks`` as the API writes them."""
    decoded = msgspec.convert(tasks, list[TaskInfo])
    return TaskWindow(decoded, dupes, total_count, 1, len(decoded))


def summary_of(tasks: list[dict[str, Any]], **limits: Any) -> TargetSummary:
    return summarize(window_of(tasks), SummaryLimits(**limits))


def task(task_id: str, created: int, status: str, *urls: dict[str, Any]) -> dict[str, Any]:
    return {"TaskId": task_id, "CreateTime": created, "Status": status, "UrlLists": list(urls)}


def test_provider_sample_every_anomaly_is_counted_not_fatal() -> None:
    raw = json.loads(SAMPLE_BYTES)
    answer = decode_response(SAMPLE_BYTES)
    summary = summarize(window_of(answer.task_list, answer.total_count), SummaryLimits())

    raw_urls = [u for t in raw["TaskList"] for u in t["UrlLists"]]
    # Every status in the sample is a random string: all of them count as unknown.
    assert summary.tasks_by_status == {
        **dict.fromkeys(STATUSES, 0),
        "unknown": len(raw["TaskList"]),
    }
    assert summary.urls_by_status == {**dict.fromkeys(STATUSES, 0), "unknown": len(raw_urls)}
    assert summary.anomalies["unknown_status"] == len(raw["TaskList"]) + len(raw_urls)
    assert summary.anomalies["total_count_mismatch"] == 1  # TotalCount 4, seven tasks
    backwards = sum(1 for u in raw_urls if 0 < u["FinishTime"] < u["CreateTime"])
    assert backwards > 0
    assert summary.anomalies["finish_before_create"] == backwards
    assert summary.anomalies["progress_out_of_range"] == 0
    # None is success or failure, so each URL is unfinished and shows its progress.
    assert len(summary.url_progress) == len(raw_urls)
    assert {(p.task_id, p.url, p.ratio) for p in summary.url_progress} == {
        (t["TaskId"], u["Url"], u["Progress"] / 100) for t in raw["TaskList"] for u in t["UrlLists"]
    }
    assert summary.oldest_unfinished_created is None  # no task is in wait or process
    assert summary.task_completion == []
    assert all(h.count == 0 for h in summary.url_completion.values())


def test_unknow_is_the_documented_spelling_and_no_anomaly() -> None:
    summary = summary_of(
        [
            task("t", 5, "unknow", url_entry("a", "unknow")),
            task("u", 5, "", url_entry("b", "weird")),
        ]
    )
    assert summary.tasks_by_status["unknown"] == 2
    assert summary.urls_by_status["unknown"] == 2
    assert summary.anomalies["unknown_status"] == 2  # "" and "weird", not "unknow"


def test_missing_fields_are_unknown_and_zero() -> None:
    summary = summary_of([{"TaskId": "t"}, {"UrlLists": [{}]}])
    assert summary.tasks_by_status["unknown"] == 2
    assert summary.urls_by_status["unknown"] == 1
    assert summary.anomalies["unknown_status"] == 3
    assert [(p.task_id, p.url, p.ratio) for p in summary.url_progress] == [("", "", 0.0)]


def test_null_status_and_task_id_count_as_missing_not_as_a_broken_answer() -> None:
    answer = decode_response(
        b'{"RetCode": 0, "TaskList": [{"TaskId": null, "Status": null,'
        b' "UrlLists": [{"Url": "u", "Status": null, "Progress": 40}]}]}'
    )
    summary = summarize(window_of(answer.task_list), SummaryLimits())
    assert summary.tasks_by_status["unknown"] == 1
    assert summary.urls_by_status["unknown"] == 1
    assert summary.anomalies["unknown_status"] == 2
    assert [(p.task_id, p.url, p.ratio) for p in summary.url_progress] == [("", "u", 0.4)]


def test_completion_latency_uses_url_create_time_else_the_tasks() -> None:
    summary = summary_of(
        [
            task(
                "t",
                1000,
                "success",
                url_entry("a", "success", created=1100, finish=1105),  # 5 s
                url_entry("b", "success", created=0, finish=1040),  # task's CreateTime: 40 s
                url_entry("c", "failure", created=1000, finish=1000 + 7200),  # 2 h
                url_entry("d", "success", created=1000, finish=0),  # never finished: left out
                url_entry(
                    "e", "success", created=1200, finish=1100
                ),  # backwards: left out, counted
            )
        ],
        buckets=(10.0, 60.0, 3600.0),
    )
    success = summary.url_completion["success"]
    assert success.cumulative() == [(10.0, 1), (60.0, 2), (3600.0, 2), (float("inf"), 2)]
    assert success.total == 45
    failure = summary.url_completion["failure"]
    assert failure.cumulative()[-2:] == [(3600.0, 0), (float("inf"), 1)]
    assert summary.anomalies["finish_before_create"] == 1
    # The task finished when its last valid URL did.
    assert summary.task_completion == [("t", 7200.0)]


def test_bucket_bounds_are_inclusive() -> None:
    summary = summary_of(
        [task("t", 0, "success", url_entry("a", "success", created=100, finish=110))],
        buckets=(10.0, 20.0),
    )
    assert summary.url_completion["success"].cumulative()[0] == (10.0, 1)


def test_progress_is_clamped_and_out_of_range_counted() -> None:
    summary = summary_of(
        [
            task(
                "t",
                5,
                "process",
                url_entry("a", "process", progress=150),
                url_entry("b", "wait", progress=-3),
            )
        ]
    )
    assert sorted(p.ratio for p in summary.url_progress) == [0.0, 1.0]
    assert summary.anomalies["progress_out_of_range"] == 2


def test_url_series_cap_keeps_newest_tasks_and_counts_the_rest() -> None:
    tasks = [
        task(
            f"t{n}",
            1000 + n,
            "process",
            *(url_entry(f"u{i}", "process", progress=i) for i in range(3)),
        )
        for n in range(5)
    ]
    summary = summary_of(tasks, max_url_series=7)
    assert len(summary.url_progress) == 7
    assert summary.url_series_dropped == 15 - 7
    assert [p.task_id for p in summary.url_progress] == ["t4"] * 3 + ["t3"] * 3 + ["t2"]


def test_finished_urls_never_show_progress_and_duplicates_show_once() -> None:
    summary = summary_of(
        [
            task(
                "t",
                5,
                "process",
                url_entry("a", "success", finish=2000),
                url_entry("b", "wait"),
                url_entry("b", "wait"),
            )
        ]
    )
    assert [(p.task_id, p.url) for p in summary.url_progress] == [("t", "b")]
    assert summary.anomalies["duplicate_url"] == 1
    assert (
        summary.urls_by_status["wait"] == 2
    )  # both records count; only the series is deduplicated


def test_task_series_cap_and_oldest_unfinished() -> None:
    tasks = [
        task(f"d{n}", 100 + n, "success", url_entry("a", "success", created=100 + n, finish=500))
        for n in range(4)
    ]
    tasks += [task("w", 50, "wait"), task("p", 70, "process"), task("f", 10, "failure")]
    summary = summary_of(tasks, max_task_series=2)
    assert summary.task_completion == [("d3", 397.0), ("d2", 398.0)]
    assert summary.oldest_unfinished_created == 50


def test_duplicates_and_total_count_from_the_window() -> None:
    summary = summarize(window_of([task("a", 1, "wait")], total_count=1, dupes=3), SummaryLimits())
    assert summary.anomalies["duplicate_task"] == 3
    assert summary.anomalies["total_count_mismatch"] == 0
    summary = summarize(window_of([task("a", 1, "wait")], total_count=None), SummaryLimits())
    assert summary.anomalies["total_count_mismatch"] == 0


def test_limits_default_to_the_settings_defaults() -> None:
    fields = Settings.model_fields
    limits = SummaryLimits()
    assert limits.max_url_series == fields["max_url_series"].default
    assert limits.max_task_series == fields["max_task_series"].default
    assert limits.max_label_value_length == fields["max_label_value_length"].default
    buckets = fields["histogram_buckets"].default_factory
    assert buckets is not None
    assert list(limits.buckets) == buckets()  # type: ignore[call-arg]
