"""The Refresh, Domains and Daily quotas rows, and the refresh, domain and quota alerts,
against a real Prometheus (no feature flag) scraping a fixed exposition of their metrics.

The exposition holds what the demo is meant to show (a domain over 80 % of its prefetch
quota, prefetch switched off on a domain with prefetch URLs, a refresh task unfinished for
15 minutes, a domain failing far more than its project), so that these queries and rules
are checked independently of the simulator and collector that produce the same names
(tests/shipped/test_prometheus_e2e.py checks them against the demo itself).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import installed, stop_process
from promkit import Prometheus, wait_for
from test_prometheus_e2e import (
    ALL,
    DEADLINE_SECONDS,
    ONE,
    PLATFORMS,
    PROJECTS,
    board,
    recorded_names,
    start_prometheus,
    substitute,
)

pytestmark = pytest.mark.system

ROWS = {"Refresh", "Domains", "Daily quotas"}
# Panels outside those rows that read the per-action API request counter.
ALSO = {"API requests by outcome"}
STATUSES = ("success", "wait", "process", "failure", "unknown")
ACTIONS = (
    "DescribeNewUcdnPrefetchCacheTask",
    "DescribeNewUcdnRefreshCacheTask",
    "GetUcdnDomainInfoList",
    "GetUcdnDomainPrefetchRefreshState",
    "GetUcdnDomainPrefetchEnable",
)
# domain -> URLs by status, the same for both kinds and every target: bad.example.com
# fails 75 % while the project as a whole fails under 4 %.
DOMAIN_URLS = {
    "good.example.com": {"success": 400},
    "bad.example.com": {"success": 10, "failure": 30},
    "off.example.com": {"wait": 3, "success": 20},
    "_other": {"success": 400, "process": 2},
}
# (domain, kind) -> (daily quota, used today): good.example.com is at 90 % of prefetch.
QUOTAS = {
    ("good.example.com", "prefetch"): (1000, 900),
    ("good.example.com", "refresh_file"): (2000, 100),
    ("good.example.com", "refresh_dir"): (100, 0),
    ("bad.example.com", "prefetch"): (1000, 10),
    ("off.example.com", "prefetch"): (1000, 0),
}
PREFETCH_OFF = {"off.example.com"}
UNFINISHED_REFRESH_AGE_SECONDS = 900
BUCKETS = ("1", "10", "60", "600", "3600", "+Inf")


def line(name: str, value: float, **labels: str) -> str:
    rendered = ",".join(f'{key}="{text}"' for key, text in labels.items())
    return f"{name}{{{rendered}}} {value}\n"


def per_target(project: str, platform: str, now: float) -> Iterator[str]:
    """The refresh and per-domain series of one target."""
    target = {"project_id": project, "platform": platform}
    yield line("ucdn_refresh_up", 1, **target)
    yield line("ucdn_refresh_scrape_duration_seconds", 0.2, **target)
    yield line("ucdn_refresh_last_success_timestamp_seconds", now, **target)
    for status in STATUSES:
        yield line("ucdn_refresh_tasks", 2, **target, status=status)
        yield line("ucdn_refresh_urls", 5, **target, status=status)
    yield line("ucdn_refresh_url_progress_ratio", 0.5, **target, task_id="r-1", url="/a")
    yield line("ucdn_refresh_url_series_dropped", 0, **target)
    for index, le in enumerate(BUCKETS):
        count = min(index * 2, 6)
        yield line(
            "ucdn_refresh_url_completion_seconds_bucket", count, **target, status="success", le=le
        )
    yield line("ucdn_refresh_url_completion_seconds_gcount", 6, **target, status="success")
    yield line("ucdn_refresh_url_completion_seconds_gsum", 120, **target, status="success")
    yield line("ucdn_refresh_task_completion_seconds", 30, **target, task_id="r-2")
    yield line(
        "ucdn_refresh_oldest_unfinished_task_created_timestamp_seconds",
        now - UNFINISHED_REFRESH_AGE_SECONDS,
        **target,
    )
    yield line("ucdn_refresh_records_invalid", 0, **target, reason="unknown_status")
    for kind in ("prefetch", "refresh"):
        for domain, counts in DOMAIN_URLS.items():
            for status in STATUSES:
                yield line(
                    f"ucdn_{kind}_domain_urls",
                    counts.get(status, 0),
                    **target,
                    domain=domain,
                    status=status,
                )


def per_project(project: str, now: float) -> Iterator[str]:
    """The quota series of one project."""
    for (domain, kind), (daily, used) in QUOTAS.items():
        labels = {"project_id": project, "domain": domain, "kind": kind}
        yield line("ucdn_domain_quota", daily, **labels)
        yield line("ucdn_domain_quota_used", used, **labels)
    for domain in {domain for domain, _ in QUOTAS}:
        enabled = 0 if domain in PREFETCH_OFF else 1
        yield line("ucdn_domain_prefetch_enabled", enabled, project_id=project, domain=domain)
    yield line("ucdn_domain_quota_up", 1, project_id=project)
    yield line("ucdn_domain_quota_last_success_timestamp_seconds", now, project_id=project)
    yield line("ucdn_domain_quota_domains_dropped", 0, project_id=project)


class Exposition:
    """The exposition at scrape time; the request counter grows by one call per scrape."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.lock = threading.Lock()

    def render(self) -> bytes:
        with self.lock:
            self.scrapes += 1
            scrapes = self.scrapes
        now = time.time()
        text = [
            line("ucdn_prefetch_exporter_build_info", 1, version="test"),
            *(
                line("ucdn_api_requests_total", scrapes, action=action, outcome=outcome)
                for action in ACTIONS
                for outcome in ("ok", "timeout")
            ),
        ]
        for project in PROJECTS:
            text.extend(per_project(project, now))
            for platform in PLATFORMS:
                text.extend(per_target(project, platform, now))
        return "".join(text).encode()


def serve(exposition: Exposition) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: Prometheus scrapes every few seconds

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def settled(prometheus: Prometheus) -> bool:
    """Target up and every record of the new rules present."""
    targets = prometheus.api("targets")["activeTargets"]
    if [target["health"] for target in targets] != ["up"]:
        return False
    wanted = [name for name in recorded_names() if ":ucdn_prefetch_" not in name]
    return all(prometheus.query(name) for name in wanted)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    directory: Path = tmp_path_factory.mktemp("prometheus-boards")
    installed("prometheus")
    exposition = serve(Exposition())
    process: subprocess.Popen[bytes] | None = None
    try:
        process, server = start_prometheus(directory, exposition.server_address[1])
        end = time.monotonic() + DEADLINE_SECONDS
        wait_for("target up, new records present", lambda: settled(server), server, end)
        yield server
    finally:
        if process is not None:
            stop_process(process)
        exposition.shutdown()


def row_targets() -> list[tuple[str, str, bool]]:
    """(panel title, expression, instant) of every query of the new rows and ALSO."""
    found: list[tuple[str, str, bool]] = []
    row = ""
    for panel in board()["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        if row in ROWS or panel["title"] in ALSO:
            found.extend(
                (panel["title"], t["expr"], bool(t.get("instant"))) for t in panel["targets"]
            )
    return found


def test_the_new_rows_have_queries() -> None:
    assert {title for title, _, _ in row_targets()} >= ALSO
    assert len(row_targets()) > 20


@pytest.mark.parametrize("selection", [ALL, ONE], ids=["all", "one-target"])
@pytest.mark.parametrize(
    ("title", "expr", "instant"),
    row_targets(),
    ids=[f"{title}:{expr[:40]}" for title, expr, _ in row_targets()],
)
def test_every_new_panel_query_returns_data(
    prometheus: Prometheus, title: str, expr: str, instant: bool, selection: dict[str, str]
) -> None:
    filled = substitute(expr, selection)
    result = prometheus.query(filled) if instant else prometheus.query_range(filled, 20)
    assert result, f"{title}: {filled} returned nothing"
    if selection is ONE:
        for label, value in ONE.items():
            kept = {series["metric"].get(label, value) for series in result}
            assert kept == {value}, f"{title}: {filled} returned other targets"


def test_the_rules_raise_what_the_data_shows(prometheus: Prometheus) -> None:
    def active() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for alert in prometheus.api("alerts")["alerts"]:
            labels = alert["labels"]
            found.setdefault(labels["alertname"], set()).add(labels.get("domain", ""))
        return found

    expected = {
        "UcdnDomainQuotaNearlyUsed": {"good.example.com"},
        "UcdnDomainPrefetchDisabled": {"off.example.com"},
        "UcdnRefreshTaskStuck": {""},
        "UcdnDomainFailureRatioHigh": {"bad.example.com"},
    }
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(name in active() for name in expected):
        time.sleep(0.5)
    found = active()
    for name, domains in expected.items():
        assert found.get(name) == domains, (name, found)
    assert "UcdnDomainQuotaCollectionDown" not in found
