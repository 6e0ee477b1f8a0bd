"""Label values are bounded: a 50 MB ``Url`` or ``TaskId``, or a 100 KB host name, must not
become a label of that size.

Prometheus' ``label_value_length_limit`` rejects a whole scrape over one long value, and
the series caps bound the number of series, not their size. Longer values are cut to a
prefix (on a character boundary), ``…`` and a hash of the whole value, so two long values
stay two series; each cut of a target's series is counted as ``label_value_truncated``.
End to end: the simulator serves the long values over loopback HTTP to the real client
and collector (tests/shipped/test_prometheus_labels.py has Prometheus scrape them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import exposition
import msgspec
import pytest
from conftest import url_entry
from exposition import samples
from faultkit import CANARY, NOW, PUBLIC_KEY, signatures
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.collection.kinds import TaskKind
from exporter.collection.quota_sweep import QuotaSweeper
from exporter.gateway.answers import TaskInfo
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.paging import TaskWindow
from exporter.gateway.transport import ClientOptions
from exporter.metrics import ALL_FAMILIES, QUOTA_FAMILIES, TASK_KINDS
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.config import load_settings
from exporter.settings.names import ConfigError
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, Domain
from exporter.simulator.static import StaticDataset
from exporter.summary.labels import bounded_label_value
from exporter.summary.target_summary import ANOMALIES, SummaryLimits, summarize

LIMIT = 1024
HUGE = 50 * 1024 * 1024
CUT = re.compile(r"…[0-9a-f]{16}\Z")
LONG_HOST = "h" * 100_000 + ".example.com"  # two long hosts sharing 100,000 bytes
OTHER_LONG_HOST = "h" * 100_000 + ".example.org"


@given(st.text(max_size=400), st.integers(min_value=64, max_value=300))
def test_a_bounded_value_fits_keeps_its_prefix_and_is_unchanged_when_it_fits(
    value: str, limit: int
) -> None:
    bounded = bounded_label_value(value, limit)
    assert len(bounded.encode("utf-8", "surrogatepass")) <= limit
    if len(value.encode("utf-8", "surrogatepass")) <= limit:
        assert bounded == value
    else:
        assert CUT.search(bounded)
        prefix = bounded[: -len("…") - 16]
        assert value.startswith(prefix)  # whole characters only: nothing mangled
        assert len(prefix.encode("utf-8", "surrogatepass")) > limit - 19 - 4


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
@pytest.mark.parametrize("limit", range(64, 72))
def test_a_cut_never_splits_a_character(char: str, limit: int) -> None:
    value = "x" + char * 200
    bounded = bounded_label_value(value, limit)
    assert len(bounded.encode()) <= limit
    assert value.startswith(bounded[: -len("…") - 16])


def test_two_long_values_sharing_a_prefix_stay_two() -> None:
    common = "https://cdn.example.com/" + "d/" * 2000
    first, second = (
        bounded_label_value(common + "a.bin", LIMIT),
        bounded_label_value(common + "b.bin", LIMIT),
    )
    assert first != second
    assert first[:900] == second[:900]


def test_the_setting_has_its_default_and_a_floor_named_without_its_value() -> None:
    assert load_settings({"demo": True}).max_label_value_length == LIMIT
    assert SummaryLimits().max_label_value_length == LIMIT
    assert ANOMALIES[-1] == "label_value_truncated"
    with pytest.raises(ConfigError) as error:
        load_settings({"demo": True, "max_label_value_length": "63"})
    message = str(error.value)
    assert "UCDN_EXPORTER_MAX_LABEL_VALUE_LENGTH" in message
    assert "--max-label-value-length" in message
    assert "63" not in message and "\n" not in message


def window_of(tasks: list[dict[str, Any]]) -> TaskWindow:
    return TaskWindow(msgspec.convert(tasks, list[TaskInfo]), 0, len(tasks), 1, len(tasks))


def test_long_urls_sharing_a_prefix_are_two_series_and_counted_as_cut() -> None:
    common = "https://cdn.example.com/" + "x" * 5000
    tasks = [
        {
            "TaskId": "t-1",
            "CreateTime": NOW - 60,
            "Status": "process",
            "UrlLists": [
                url_entry(common + "/a.bin", "wait", NOW - 60),
                url_entry(common + "/b.bin", "process", NOW - 60, progress=40),
                url_entry("https://cdn.example.com/short", "wait", NOW - 60),
            ],
        }
    ]
    summary = summarize(window_of(tasks), SummaryLimits())
    urls = [u.url for u in summary.url_progress]
    assert len(set(urls)) == 3
    assert all(len(url.encode()) <= LIMIT for url in urls)
    assert summary.anomalies["label_value_truncated"] == 2
    assert summary.anomalies["duplicate_url"] == 0
    assert summary.urls_by_status == {"success": 0, "failure": 0, "process": 1, "wait": 2,
                                      "unknown": 0}  # fmt: skip


@pytest.fixture(scope="module")
def huge_exposition() -> Iterator[str]:
    """One collection of a 50 MB URL (on CDN) and a 50 MB TaskId (on DCDN), as text."""
    huge_url = "https://cdn.example.com/" + "u" * HUGE
    huge_id = "t" * HUGE
    dataset = StaticDataset(
        {
            ("", False): [
                {"TaskId": "t-url", "CreateTime": NOW - 120, "Status": "process",
                 "UrlLists": [url_entry(huge_url, "wait", NOW - 120),
                              url_entry("https://cdn.example.com/ok", "success", NOW - 120,
                                        NOW - 100, 100)]},
            ],
            ("", True): [
                {"TaskId": huge_id, "CreateTime": NOW - 300, "Status": "success",
                 "UrlLists": [url_entry("https://cdn.example.com/done", "success", NOW - 300,
                                        NOW - 240, 100),
                              url_entry("https://cdn.example.com/late", "process", NOW - 300,
                                        0, 70)]},
            ],
        }
    )  # fmt: skip
    api = SimulatedApi(PUBLIC_KEY, CANARY, dataset).start()
    # Each answer carries a 50 MB value: above the default byte cap of one collection.
    options = ClientOptions(max_response_bytes=128 << 20, max_collection_bytes=128 << 20)
    client = ApiClient(api.url, PUBLIC_KEY, SecretStr(CANARY), options=options)
    collector = UcdnCollector(client, [Target("", "cdn"), Target("", "dcdn")])
    try:
        metrics = collector.collect_within(Deadline.after(60))
        yield generate_latest(MetricsSnapshot(metrics)).decode()
    finally:
        collector.close()
        client.close()
        api.stop()


@pytest.mark.e2e  # two seconds of 50 MB answers over loopback
def test_fifty_megabyte_values_give_a_bounded_exposition_with_the_counts_right(
    huge_exposition: str,
) -> None:
    assert len(huge_exposition.encode()) < 64 * 1024
    parsed = samples(huge_exposition)
    assert all(len(v.encode()) <= LIMIT for _, labels in parsed for _, v in labels)

    def value(name: str, **labels: str) -> float | None:
        return exposition.value(parsed, name, **labels)

    for platform in ("cdn", "dcdn"):
        assert value("ucdn_prefetch_up", platform=platform) == 1

    def label(name: str, platform: str, key: str) -> str:
        [found] = [
            dict(ls)[key] for n, ls in parsed if n == name and dict(ls)["platform"] == platform
        ]
        return found

    # The URL: one progress series, cut; the figures are those of the whole data.
    cut_url = label("ucdn_prefetch_url_progress_ratio", "cdn", "url")
    assert cut_url.startswith("https://cdn.example.com/uuu") and CUT.search(cut_url)
    assert value("ucdn_prefetch_urls", platform="cdn", status="wait") == 1
    assert value("ucdn_prefetch_urls", platform="cdn", status="success") == 1
    cuts = "ucdn_prefetch_records_invalid"
    assert value(cuts, platform="cdn", reason="label_value_truncated") == 1
    # The TaskId: cut alike in both series that carry it, so they still match in PromQL.
    progress_id = label("ucdn_prefetch_url_progress_ratio", "dcdn", "task_id")
    completion_id = label("ucdn_prefetch_task_completion_seconds", "dcdn", "task_id")
    assert progress_id == completion_id
    assert progress_id.startswith("ttt") and CUT.search(progress_id)
    assert value("ucdn_prefetch_task_completion_seconds", platform="dcdn") == 60
    assert value("ucdn_prefetch_tasks", platform="dcdn", status="success") == 1
    assert value(cuts, platform="dcdn", reason="label_value_truncated") == 2


def finished_on(host: str, task_id: str) -> dict[str, Any]:
    return {
        "TaskId": task_id,
        "CreateTime": NOW - 60,
        "Status": "success",
        "UrlLists": [url_entry(f"https://{host}/a.bin", "success", NOW - 60, NOW - 30, 100)],
    }


def test_long_host_names_are_cut_counted_and_stay_apart_in_domain_urls() -> None:
    hosts = [LONG_HOST, OTHER_LONG_HOST, "cdn.example.com"]
    tasks = [finished_on(host, f"t-{index}") for index, host in enumerate(hosts)]
    summary = summarize(window_of(tasks), SummaryLimits())
    cut = [domain for domain in summary.domain_urls if domain != "cdn.example.com"]
    assert len(cut) == 2 and len(summary.domain_urls) == 3
    assert all(len(d.encode()) <= LIMIT and CUT.search(d) and d.startswith("hhh") for d in cut)
    assert all(row["success"] == 1 for row in summary.domain_urls.values())
    assert summary.anomalies["label_value_truncated"] == 2


def test_a_host_named_as_another_hosts_cut_value_adds_to_its_series() -> None:
    cut = bounded_label_value(LONG_HOST, LIMIT)
    tasks = [finished_on(LONG_HOST, "t-1"), finished_on(cut, "t-2")]
    summary = summarize(window_of(tasks), SummaryLimits())
    assert list(summary.domain_urls) == [cut]  # one series: a repeated one fails the scrape
    assert summary.domain_urls[cut]["success"] == 2
    assert summary.anomalies["label_value_truncated"] == 1


def test_long_domain_names_are_cut_in_the_quota_families(
    simulator: Callable[..., SimulatedApi],
) -> None:
    domains = [Domain(LONG_HOST, "d-1"), Domain(OTHER_LONG_HOST, "d-2"), Domain("a.example", "d-3")]
    api = simulator(StaticDataset({}, domains={"": domains}))
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
    sweeper = QuotaSweeper(client, [""])
    try:
        parsed = samples(
            generate_latest(MetricsSnapshot(sweeper.families(Deadline.after(30)))).decode()
        )
    finally:
        sweeper.close()
        client.close()
    assert exposition.value(parsed, QUOTA_FAMILIES.up.name) == 1
    for family in (QUOTA_FAMILIES.quota, QUOTA_FAMILIES.used, QUOTA_FAMILIES.prefetch_enabled):
        named = {dict(labels)["domain"] for name, labels in parsed if name == family.name}
        long_ones = named - {"a.example"}
        assert len(named) == 3 and len(long_ones) == 2, family.name
        assert all(len(d.encode()) <= LIMIT and CUT.search(d) for d in long_ones), family.name


def test_every_label_value_of_every_family_is_bounded(
    simulator: Callable[..., SimulatedApi],
) -> None:
    """A 100 KB host in both kinds' task URLs and in the domain list: every family's
    every label value is at most the limit, and each domain series is there, cut."""
    tasks = {("", False): [finished_on(LONG_HOST, "t-1"), finished_on("a.example", "t-2")]}
    api = simulator(
        StaticDataset(
            tasks,
            refresh_tasks=tasks,
            domains={"": [Domain(LONG_HOST, "d-1"), Domain("a.example", "d-2")]},
        )
    )
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
    kinds = [TaskKind.named(name, SummaryLimits()) for name in TASK_KINDS]
    collector = UcdnCollector(
        client, [Target("", "cdn")], kinds=kinds, extra=[QuotaSweeper(client, [""])]
    )
    try:
        text = generate_latest(MetricsSnapshot(collector.collect_within(Deadline.after(30))))
    finally:
        collector.close()
        client.close()
    parsed = samples(text.decode())
    assert len(text) < 64 * 1024
    assert all(len(v.encode()) <= LIMIT for _, labels in parsed for _, v in labels)
    with_domain = [family for family in ALL_FAMILIES if "domain" in family.labels]
    assert len(with_domain) == 5  # each kind's domain_urls, and the three quota families
    for family in with_domain:
        named = {dict(labels)["domain"] for name, labels in parsed if name == family.name}
        [cut] = [domain for domain in named if domain not in ("a.example", "_other")]
        assert cut.startswith("hhh") and CUT.search(cut), family.name
    for kind in TASK_KINDS:
        truncated = exposition.value(
            parsed, f"ucdn_{kind}_records_invalid", reason="label_value_truncated"
        )
        assert truncated == 1, kind


def test_a_signature_a_gateway_echoes_into_a_task_id_or_url_is_in_no_label() -> None:
    """A gateway that puts a signature it received into a later answer's TaskId and URLs:
    the series are published, their label values redacted and still apart."""
    dataset = StaticDataset({("", False): []})
    api = SimulatedApi(PUBLIC_KEY, CANARY, dataset).start()
    client = ApiClient(api.url, PUBLIC_KEY, SecretStr(CANARY))
    collector = UcdnCollector(client, [Target("", "cdn")])
    try:
        collector.collect_within(Deadline.after(30))
        echoed = sorted(signatures(api))[0]
        dataset.set_tasks(
            ("", False),
            [
                {"TaskId": echoed.upper(), "CreateTime": NOW - 60, "Status": "process",
                 "UrlLists": [url_entry(f"https://cdn.example.com/{echoed}.bin", "wait", NOW - 60),
                              url_entry(f"https://cdn.example.com/{echoed}/x", "process",
                                        NOW - 60, progress=5)]},
            ],
        )  # fmt: skip
        metrics = collector.collect_within(Deadline.after(30))
        text = generate_latest(MetricsSnapshot(metrics)).decode()
    finally:
        collector.close()
        client.close()
        api.stop()
    assert echoed not in text.lower()
    progress = [
        dict(labels)
        for (name, labels) in samples(text)
        if name == "ucdn_prefetch_url_progress_ratio"
    ]
    assert len(progress) == 2
    assert len({series["url"] for series in progress}) == 2
    for series in progress:
        assert series["task_id"].startswith("<redacted>…"), series
        assert series["url"].startswith("<redacted>…"), series
