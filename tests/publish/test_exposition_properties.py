"""Property-based tests: whatever the gateway answers, a scrape renders a valid exposition.

Hypothesis generates answers with the documented structure and hostile values (huge
and negative numbers, floats, wrong types, missing fields, statuses outside the enum,
unicode, repeated TaskIds and URLs) and also arbitrary bytes. The structured answers
are served over loopback by the simulator and collected through the real client and
collector; the bytes go straight through the client's decoding. The properties: no
exception ever leaves ``collect_within()``, the exposition renders and parses, no
series is repeated (Prometheus would reject the whole scrape), and a target is either
``up 0`` or reports sane numbers that agree with an independent count.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FAST_EXAMPLES, examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.gateway.answers import STATUSES
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions, _decode
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.static import StaticDataset
from exporter.summary.target_summary import ANOMALIES, SummaryLimits

PUBLIC, PRIVATE = "prop-public", "prop-private"
TARGET = Target("", "cdn")
PAGE_SIZE = 6
MAX_PAGES = 3

# Fast and reproducible in CI: the same examples on every run, no per-example deadline
# (a loopback round trip is fast, but a loaded CI box must not fail on timing alone).
settings.register_profile(
    "faults",
    max_examples=examples(120, fast=FAST_EXAMPLES),
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FAULT_SETTINGS = settings.get_profile("faults")

# Values that break naive code: past int64, past float's range, negative, not integers.
hostile_ints = st.one_of(
    st.integers(min_value=-5, max_value=200),
    st.integers(min_value=1_600_000_000, max_value=1_800_000_000),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, -(2**63), 10**20, 10**308, 10**400, -(10**400)]),
)
hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e3, max_value=1e3).map(math.floor).map(float),
    st.text(max_size=8),
    st.sampled_from(["123", "1e3", "-7", "", "\u0000", "NaN"]),
)
maybe_int = st.one_of(hostile_ints, hostile_ints, hostile_ints, hostile_scalars)
status_values = st.one_of(
    st.sampled_from(["success", "wait", "process", "failure", "unknow", "unknown"]),
    st.text(max_size=10),
    hostile_scalars,
)
label_text = st.one_of(
    st.sampled_from(["t1", "t2", "t3"]),  # repeats on purpose: duplicate TaskIds and URLs
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"]),  # JSON cannot carry lone surrogates
        max_size=12,
    ),
)


def _maybe(field: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A one-field dict, or nothing: every field is optional in the documentation."""
    return st.one_of(st.just({}), strategy.map(lambda value: {field: value}))


def _record(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    parts = [_maybe(name, strategy) for name, strategy in fields.items()]
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


urls = _record(
    {
        "Url": st.one_of(label_text, label_text, hostile_scalars),
        "CreateTime": maybe_int,
        "FinishTime": maybe_int,
        "Status": status_values,
        "Progress": maybe_int,
    }
)
tasks = _record(
    {
        "TaskId": st.one_of(label_text, label_text, hostile_scalars),
        "CreateTime": maybe_int,
        "Status": status_values,
        "UrlLists": st.one_of(st.lists(urls, max_size=5), st.lists(urls, max_size=5), st.none()),
    }
)
answers = st.fixed_dictionaries(
    {"RetCode": st.one_of(st.just(0), st.just(0), st.just(0), maybe_int)},
    optional={
        "Action": st.one_of(st.just("DescribeNewUcdnPrefetchCacheTaskResponse"), hostile_scalars),
        "Message": st.one_of(st.text(max_size=20), hostile_scalars),
        "TotalCount": maybe_int,
        "TaskList": st.one_of(
            st.lists(tasks, max_size=PAGE_SIZE + 2),
            st.lists(tasks, max_size=PAGE_SIZE - 1),
            hostile_scalars,
        ),
        "Extra": st.one_of(hostile_scalars, st.lists(st.integers(), max_size=2)),
    },
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SimulatedApi, UcdnCollector]]:
    """One simulator and one collector for every example: a loopback round trip each."""
    api = SimulatedApi(PUBLIC, PRIVATE, StaticDataset({})).start()
    options = ClientOptions(page_size=PAGE_SIZE, max_pages=MAX_PAGES, max_retries=0)
    client = ApiClient(api.url, PUBLIC, SecretStr(PRIVATE), options=options)
    collector = UcdnCollector(
        client, [TARGET], limits=SummaryLimits(max_url_series=4, max_task_series=3)
    )
    try:
        yield api, collector
    finally:
        collector.close()
        client.close()
        api.stop()


def render_and_check(metrics: list[Any], expected_tasks: int | None) -> None:
    """Render both formats, parse them back and check every property of the exposition."""
    text = generate_latest(MetricsSnapshot(metrics)).decode("utf-8")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    seen: Counter[tuple[str, frozenset[tuple[str, str]]]] = Counter(
        (sample.name, frozenset(sample.labels.items()))
        for family in families.values()
        for sample in family.samples
    )
    repeated = [key for key, count in seen.items() if count > 1]
    assert not repeated, f"series repeated in one scrape: {repeated[:3]}"
    # OpenMetrics is stricter (it checks bucket order and counter naming): it must parse too.
    list(parse_openmetrics(generate_openmetrics(MetricsSnapshot(metrics)).decode("utf-8")))

    def values(name: str) -> list[tuple[dict[str, str], float]]:
        family = families.get(name)
        return [(s.labels, s.value) for s in family.samples] if family else []

    (up,) = [value for _, value in values("ucdn_prefetch_up")]
    assert up in (0.0, 1.0)
    outcomes = values("ucdn_prefetch_api_requests")
    assert all(value >= 0 for _, value in outcomes)
    if up == 0.0:
        assert not values("ucdn_prefetch_tasks"), "a failed target must publish no task figures"
        return
    for name in ("ucdn_prefetch_tasks", "ucdn_prefetch_urls"):
        samples = values(name)
        assert sorted(labels["status"] for labels, _ in samples) == sorted(STATUSES)
        assert all(value >= 0 and value == int(value) for _, value in samples)
    task_total = sum(value for _, value in values("ucdn_prefetch_tasks"))
    if expected_tasks is not None:
        assert task_total == expected_tasks
    ratios = [value for _, value in values("ucdn_prefetch_url_progress_ratio")]
    assert all(0.0 <= value <= 1.0 for value in ratios)
    assert len(ratios) <= 4
    assert all(value >= 0 for _, value in values("ucdn_prefetch_url_series_dropped"))
    invalid = values("ucdn_prefetch_records_invalid")
    assert sorted(labels["reason"] for labels, _ in invalid) == sorted(ANOMALIES)
    assert all(value >= 0 for _, value in invalid)
    assert all(value >= 0 for _, value in values("ucdn_prefetch_task_completion_seconds"))
    assert len(values("ucdn_prefetch_task_completion_seconds")) <= 3


def unique_tasks(answer: dict[str, Any]) -> int:
    """An independent count: each TaskId once, tasks without one each count."""
    listed = answer.get("TaskList")
    assert isinstance(listed, list)
    ids = [task.get("TaskId") for task in listed]
    return len({i for i in ids if i is not None}) + ids.count(None)


HUGE = 10**400  # past float's range: float() of it raises OverflowError


@FAULT_SETTINGS
@given(answer=answers)
# The cases a random search may take long to combine, pinned.
@example({"RetCode": 0, "TaskList": [{"TaskId": "a", "CreateTime": HUGE, "Status": "wait"}]})
@example(
    {
        "RetCode": 0,
        "TaskList": [
            {
                "TaskId": "a",
                "CreateTime": 1,
                "Status": "success",
                "UrlLists": [
                    {"Url": "u", "Status": "success", "CreateTime": 1, "FinishTime": HUGE}
                ],
            },
        ],
    }
)
@example({"RetCode": 0, "TaskList": [{"UrlLists": [{"Url": "u", "Progress": HUGE}]}]})
@example(
    {
        "RetCode": 0,
        "TaskList": [
            {
                "Status": "success",
                "CreateTime": 5,
                "UrlLists": [{"Status": "success", "FinishTime": 9}],
            },
            {
                "Status": "failure",
                "CreateTime": 6,
                "UrlLists": [{"Status": "failure", "FinishTime": 9}],
            },
        ],
    }
)
@example({"RetCode": 0, "TotalCount": -(2**63), "TaskList": []})
# The gateway's rate limit: retried, then a failure of its own reason.
@example({"RetCode": 153})
def test_any_structured_answer_yields_a_valid_scrape(
    served: tuple[SimulatedApi, UcdnCollector],
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
) -> None:
    api, collector = served
    api.faults.clear()
    caplog.clear()
    # A 200 with a chosen body is the simulator's way to serve any text verbatim.
    api.faults.http_error(200, body=json.dumps(answer))
    with caplog.at_level(logging.WARNING):
        metrics = list(collector.collect_within(Deadline.after(5.0)))
    # A failure must be one of the documented outcomes, never a bug's traceback.
    for record in caplog.records:
        reason = getattr(record, "fields", {}).get("reason")
        assert record.levelno < logging.ERROR and not record.exc_info, record.getMessage()
        assert reason in ("invalid_response", "api_error", "rate_limited"), (
            reason,
            record.getMessage(),
        )
    listed = answer.get("TaskList")
    # One page (shorter than a page) has a known task count; longer answers page until the cap.
    expected = (
        unique_tasks(answer) if isinstance(listed, list) and len(listed) < PAGE_SIZE else None
    )
    render_and_check(metrics, expected)


@FAULT_SETTINGS
@given(body=st.one_of(st.binary(max_size=300), answers.map(lambda a: json.dumps(a).encode())))
# A Latin-1 byte inside a string the model reads: not UTF-8, so not JSON.
@example(body=b'{"RetCode": 0, "TaskList": [{"TaskId": "caf\xe9"}]}')
def test_any_bytes_decode_to_an_answer_or_an_api_error(body: bytes) -> None:
    truncated = body[: len(body) // 2]
    for candidate in (body, truncated):
        try:
            answer = _decode(candidate, "secret")
        except ApiError as error:
            assert error.reason in ("invalid_response", "api_error")
            assert "secret" not in str(error)
        else:
            assert answer.ret_code == 0
