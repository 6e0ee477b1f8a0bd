"""The exposition of a fixed dataset, compared byte for byte with a reviewed golden file.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/publish/test_golden.py``
and review the diff like code. Only the per-target durations vary between runs; they
are replaced by a placeholder before comparing. The version in the build info is the
installed one: it is left out of the comparison, so that a release needs no new golden file.
"""

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import FIXTURES, promtool, url_entry
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.collection.kinds import TaskKind
from exporter.collection.quota_sweep import QuotaSweeper
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.metrics import API_REQUESTS, BUILD_INFO, PREFETCH_FAMILIES
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, Domain, Quota
from exporter.simulator.static import StaticDataset
from exporter.summary.target_summary import SummaryLimits
from exporter.web.app import ExporterApp

pytestmark = pytest.mark.system

GOLDEN = FIXTURES / "golden.prom"
LIMITS = SummaryLimits(max_url_series=3, max_task_series=2, buckets=(10.0, 60.0, 3600.0))
NOW = 1_790_000_000
DURATION = re.compile(rb"^(ucdn_[a-z]+_scrape_duration_seconds\{[^}]*\}) \S+$", re.MULTILINE)
VERSION = re.compile(rf'^({BUILD_INFO.name}\{{version=)"[^"]*"'.encode(), re.MULTILINE)


DATASET = {
    ("web", False): [
        {
            "TaskId": "t-launch",
            "CreateTime": NOW - 600,
            "Status": "process",
            "UrlLists": [
                url_entry("https://cdn.example.com/app.js", "success", NOW - 600, NOW - 590, 100),
                url_entry("https://cdn.example.com/app.css", "process", NOW - 600, 0, 45),
                url_entry("https://cdn.example.com/hero.webp", "wait", NOW - 600, 0, 0),
            ],
        },
        {
            "TaskId": "t-release",
            "CreateTime": NOW - 7200,
            "Status": "success",
            "UrlLists": [
                url_entry(
                    "https://cdn.example.com/v2/setup.exe", "success", NOW - 7200, NOW - 3600, 100
                ),
                url_entry("https://cdn.example.com/v2/notes.html", "success", 0, NOW - 7170, 100),
            ],
        },
        {
            "TaskId": "t-broken",
            "CreateTime": NOW - 9000,
            "Status": "failure",
            "UrlLists": [
                url_entry(
                    "https://cdn.example.com/missing.bin", "failure", NOW - 9000, NOW - 8990, 0
                ),
                url_entry("https://cdn.example.com/odd.bin", "unknow", NOW - 9000, NOW - 9100, 140),
            ],
        },
        {
            "TaskId": "t-queued",
            "CreateTime": NOW - 20000,
            "Status": "wait",
            "UrlLists": [
                url_entry("https://cdn.example.com/big.iso", "wait", NOW - 20000),
                url_entry("https://cdn.example.com/big.iso", "wait", NOW - 20000),
            ],
        },
        {"TaskId": "t-weird", "CreateTime": NOW - 30000, "Status": "xCZMvZWZ", "UrlLists": []},
    ],
    ("web", True): [],
}
# Refresh tasks on hosts spelled as a gateway may spell them (capitals, a port, none).
REFRESH = {
    ("web", False): [
        {
            "TaskId": "r-purge",
            "CreateTime": NOW - 900,
            "Status": "process",
            "Type": "file",
            "UrlLists": [
                url_entry(
                    "https://IMG.Example.com:8443/a.png", "success", NOW - 900, NOW - 870, 100
                ),
                url_entry("https://img.example.com/b.png", "process", NOW - 900, 0, 30),
                url_entry("/relative/c.png", "failure", NOW - 900, NOW - 880, 0),
            ],
        },
        {
            "TaskId": "r-dir",
            "CreateTime": NOW - 4000,
            "Status": "success",
            "Type": "dir",
            "UrlLists": [
                url_entry("https://cdn.example.com/v1/", "success", NOW - 4000, NOW - 3995, 100)
            ],
        },
    ],
}
DOMAINS = {"web": [Domain("cdn.example.com", "d-cdn"), Domain("img.example.com", "d-img")]}
QUOTAS = {
    ("web", "d-cdn"): Quota(
        submit_prefetch_count=420, submit_refresh_file=12, submit_refresh_dir=1
    ),
    ("web", "d-img"): Quota(submit_refresh_file=3),
}


@pytest.fixture
def golden_world(simulator: Callable[..., SimulatedApi]) -> Iterator[UcdnCollector]:
    """A collector of the golden world, not yet collected."""
    dataset = StaticDataset(
        DATASET,
        refresh_tasks=REFRESH,
        domains=DOMAINS,
        quotas=QUOTAS,
        prefetch_enabled={("web", "d-img"): False},
    )
    api = simulator(dataset)
    api.total_count_error = 2
    # One page at a time: with a TotalCount too high, whether a page past the short one is
    # asked for depends on how soon its request starts, and the request counts are in the
    # golden file.
    options = ClientOptions(page_size=2, parallel_pages=1)
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=options)
    collector = UcdnCollector(
        client,
        [Target("web", "cdn"), Target("web", "dcdn")],
        kinds=[
            TaskKind.named("prefetch", LIMITS),
            TaskKind.named("refresh", replace(LIMITS, buckets=(1.0, 60.0))),
        ],
        wall_clock=lambda: NOW,
        extra=[QuotaSweeper(client, ["web"], interval=300, wall_clock=lambda: NOW)],
    )
    yield collector
    collector.close()
    client.close()


@pytest.fixture
def exposition(golden_world: UcdnCollector) -> list[Any]:
    return list(golden_world.collect_within(Deadline.after(20)))


def normalized(text: bytes) -> bytes:
    return DURATION.sub(rb"\1 <duration>", text)


def without_version(text: bytes) -> bytes:
    return VERSION.sub(rb'\1"<version>"', text)


def test_text_exposition_matches_the_golden_file(exposition: list[Any]) -> None:
    text = normalized(generate_latest(MetricsSnapshot(exposition)))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(text)
    assert without_version(text).decode() == without_version(GOLDEN.read_bytes()).decode()


def test_the_golden_comparison_ignores_only_the_version() -> None:
    golden = GOLDEN.read_bytes()
    assert VERSION.search(golden), "the golden file has no build info to ignore"
    released = VERSION.sub(rb'\1"99.0.0"', golden)
    assert released != golden
    assert without_version(released) == without_version(golden)
    # Anything else that differs still fails the comparison.
    assert without_version(released.replace(b"} 1.0", b"} 2.0", 1)) != without_version(golden)


def test_golden_file_is_lint_clean_for_promtool(exposition: list[Any]) -> None:
    text = generate_latest(MetricsSnapshot(exposition)).decode()
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # not even a naming warning


def test_openmetrics_exposition_parses_strictly(exposition: list[Any]) -> None:
    # promtool (2.42) lints only the text format; the strict OpenMetrics parser of the
    # client library checks this one, and the real-Prometheus test scrapes it for real.
    text = generate_openmetrics(MetricsSnapshot(exposition)).decode()
    families = {family.name: family for family in parse_openmetrics(text)}
    assert families[PREFETCH_FAMILIES.url_completion.name].type == "gaugehistogram"
    assert families[API_REQUESTS.name].type == "counter"
    assert text.endswith("# EOF\n")


@pytest.mark.parametrize("accept", [None, "text/plain", "text/plain;version=0.0.4"])
def test_the_app_serves_the_golden_file_to_a_text_scrape(
    golden_world: UcdnCollector, accept: str | None
) -> None:
    # The golden file is text 0.0.4, what generate_latest writes: what the app answers a
    # scrape that asks for no format, for text/plain or for its version 0.0.4.
    environ: dict[str, Any] = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
        started.append((status, headers))

    body = b"".join(ExporterApp(golden_world, runtime=CollectorRegistry())(environ, start_response))
    [(status, headers)] = started
    assert (status, dict(headers)["Content-Type"]) == ("200 OK", CONTENT_TYPE_PLAIN_0_0_4)
    assert without_version(normalized(body)) == without_version(GOLDEN.read_bytes())
