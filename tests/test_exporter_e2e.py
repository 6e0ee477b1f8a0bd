"""The exporter as a process against the simulated API: every number checked independently.

Expected values are computed here from the simulator's data with code of their own,
not with the exporter's summaries, so a mistake in one cannot hide in the other.
"""

import http.server
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import FIXTURES, exporter_args
from exposition import samples, value
from faultkit import Exporter
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

STATUS_NAMES = {"success", "wait", "process", "failure"}
CAP = 40


def status_of(raw: Any) -> str:
    return raw if raw in STATUS_NAMES else "unknown"


def expected_figures(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    urls = [(t, u) for t in tasks for u in t.get("UrlLists", [])]
    unfinished = [
        (t, u) for t, u in urls if status_of(u.get("Status")) not in {"success", "failure"}
    ]
    completions: Counter[str] = Counter()
    for t, u in urls:
        status = status_of(u.get("Status"))
        created = u.get("CreateTime") or t["CreateTime"]
        if (
            status in {"success", "failure"}
            and u.get("FinishTime", 0) >= created
            and u.get("FinishTime")
        ):
            completions[status] += 1
    waiting = [t["CreateTime"] for t in tasks if status_of(t.get("Status")) in {"wait", "process"}]
    return {
        "tasks": Counter(status_of(t.get("Status")) for t in tasks),
        "urls": Counter(status_of(u.get("Status")) for _, u in urls),
        "unfinished": len(unfinished),
        "completions": completions,
        "oldest": min(waiting) if waiting else None,
        "finished_tasks": sum(
            1 for t in tasks if status_of(t.get("Status")) in {"success", "failure"}
        ),
    }


@pytest.fixture
def dataset() -> dict[tuple[str, bool], list[dict[str, Any]]]:
    now = int(time.time())
    return {
        ("alpha", False): generate_tasks(137, 4, now=now, seed=1),
        ("alpha", True): generate_tasks(23, 2, now=now, seed=2),
        ("beta", False): generate_tasks(61, 3, now=now, seed=3),
        ("beta", True): [],
    }


def test_every_exported_value_matches_the_simulators_data(
    simulator: Callable[..., SimulatedApi],
    start_exporter: Callable[..., Exporter],
    dataset: dict[tuple[str, bool], list[dict[str, Any]]],
) -> None:
    api = simulator(StaticDataset(dataset))
    api.total_count_error = -9  # the gateway under-reports, as the provider's own sample does
    exporter = start_exporter(
        *exporter_args(api),
        "--project-ids",
        "alpha,beta",
        "--platforms",
        "cdn,dcdn",
        "--page-size",
        "10",
        "--max-url-series",
        str(CAP),
        "--max-task-series",
        "15",
    )
    metrics = exporter.metrics()
    for (project, is_dcdn), tasks in dataset.items():
        platform = "dcdn" if is_dcdn else "cdn"
        target = {"project_id": project, "platform": platform}
        expected = expected_figures(tasks)
        assert value(metrics, "ucdn_prefetch_up", **target) == 1
        for status in ("success", "wait", "process", "failure", "unknown"):
            assert (
                value(metrics, "ucdn_prefetch_tasks", **target, status=status)
                == expected["tasks"][status]
            )
            assert (
                value(metrics, "ucdn_prefetch_urls", **target, status=status)
                == expected["urls"][status]
            )
        progress = [
            k
            for k in metrics
            if k[0] == "ucdn_prefetch_url_progress_ratio" and dict(k[1]).items() >= target.items()
        ]
        assert len(progress) == min(CAP, expected["unfinished"])
        assert value(metrics, "ucdn_prefetch_url_series_dropped", **target) == max(
            0, expected["unfinished"] - CAP
        )
        for status in ("success", "failure"):
            count = value(
                metrics, "ucdn_prefetch_url_completion_seconds_gcount", **target, status=status
            )
            assert count == expected["completions"][status]
            inf = value(
                metrics,
                "ucdn_prefetch_url_completion_seconds_bucket",
                **target,
                status=status,
                le="+Inf",
            )
            assert inf == count
        tasks_shown = [
            k
            for k in metrics
            if k[0] == "ucdn_prefetch_task_completion_seconds"
            and dict(k[1]).items() >= target.items()
        ]
        assert len(tasks_shown) <= min(15, expected["finished_tasks"])
        assert (
            value(
                metrics, "ucdn_prefetch_oldest_unfinished_task_created_timestamp_seconds", **target
            )
            == expected["oldest"]
        )
        mismatch = value(
            metrics, "ucdn_prefetch_records_invalid", **target, reason="total_count_mismatch"
        )
        assert mismatch == 1  # the simulator under-reports every target by 9
        assert value(
            metrics, "ucdn_prefetch_last_success_timestamp_seconds", **target
        ) == pytest.approx(time.time(), abs=60)
    assert value(metrics, "ucdn_api_requests_total", action=PREFETCH_ACTION, outcome="ok") == (
        api.request_count(action=PREFETCH_ACTION)
    )
    assert value(metrics, "ucdn_prefetch_exporter_build_info", version="0.1.0") == 1


def test_a_failing_target_publishes_up_and_duration_only(
    simulator: Callable[..., SimulatedApi],
    start_exporter: Callable[..., Exporter],
    dataset: dict[tuple[str, bool], list[dict[str, Any]]],
) -> None:
    api = simulator(StaticDataset(dataset))
    exporter = start_exporter(
        *exporter_args(api), "--project-ids", "alpha,beta", "--max-retries", "0"
    )
    assert value(exporter.metrics(), "ucdn_prefetch_up", project_id="beta", platform="cdn") == 1
    api.faults.ret_code(8000, "backend busy", target=("beta", False))
    response = exporter.get()
    assert response.status_code == 200
    metrics = samples(response.text)
    beta = {"project_id": "beta", "platform": "cdn"}
    assert value(metrics, "ucdn_prefetch_up", **beta) == 0
    assert value(metrics, "ucdn_prefetch_scrape_duration_seconds", **beta) is not None
    assert value(metrics, "ucdn_prefetch_last_success_timestamp_seconds", **beta) is not None
    # The failing target's series of either kind; the project's quota series are not its.
    stale = [
        k
        for k in metrics
        if dict(k[1]).get("project_id") == "beta"
        and "platform" in dict(k[1])
        and k[0]
        not in {
            f"ucdn_{kind}_{name}"
            for kind in ("prefetch", "refresh")
            for name in ("up", "scrape_duration_seconds", "last_success_timestamp_seconds")
        }
    ]
    assert stale == []
    assert value(metrics, "ucdn_prefetch_up", project_id="alpha", platform="cdn") == 1
    assert (
        value(metrics, "ucdn_api_requests_total", action=PREFETCH_ACTION, outcome="api_error") == 1
    )
    # The log line reaches us through a pipe, after the scrape's answer may have.
    failures = exporter.failures(at_least=1)
    assert failures, "no collection failed line"
    assert {(f.get("reason"), f.get("project_id")) for f in failures} == {("api_error", "beta")}


@pytest.fixture
def sample_server() -> Iterator[str]:
    """A gateway that answers every request with the provider's sample, byte for byte."""
    body = (FIXTURES / "sample-response.json").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_the_providers_sample_is_exported_with_its_anomalies_counted(
    sample_server: str, start_exporter: Callable[..., Exporter]
) -> None:
    exporter = start_exporter(
        "--api-url",
        sample_server,
        "--public-key",
        "sample-public",
        "--private-key",
        "sample-private",
    )
    metrics = exporter.metrics()
    target = {"project_id": "default", "platform": "cdn"}
    assert value(metrics, "ucdn_prefetch_up", **target) == 1
    assert value(metrics, "ucdn_prefetch_tasks", **target, status="unknown") == 7
    assert value(metrics, "ucdn_prefetch_urls", **target, status="unknown") == 31
    assert value(metrics, "ucdn_prefetch_records_invalid", **target, reason="unknown_status") == 38
    assert (
        value(metrics, "ucdn_prefetch_records_invalid", **target, reason="total_count_mismatch")
        == 1
    )
    assert (
        value(metrics, "ucdn_prefetch_records_invalid", **target, reason="finish_before_create")
        == 14
    )
    assert (
        value(
            metrics,
            "ucdn_prefetch_url_progress_ratio",
            **target,
            task_id="mEuMcQSL",
            url="xChNHhYo",
        )
        == 0.03
    )
    assert (
        value(metrics, "ucdn_prefetch_oldest_unfinished_task_created_timestamp_seconds", **target)
        is None
    )


def test_demo_mode_serves_moving_data_with_no_account(
    start_exporter: Callable[..., Exporter],
) -> None:
    exporter = start_exporter("--demo", "--project-ids", "web,downloads", "--platforms", "cdn,dcdn")
    metrics = exporter.metrics()
    ups = [v for (name, _), v in metrics.items() if name == "ucdn_prefetch_up"]
    assert ups == [1.0] * 4
    total = sum(v for (name, _), v in metrics.items() if name == "ucdn_prefetch_tasks")
    assert total > 4 * 100  # a day of history, one task a minute or so per target
    assert any(name == "ucdn_prefetch_url_progress_ratio" for name, _ in metrics)
    assert exporter.get("").status_code == 200
    assert "/metrics" in exporter.get("").text or "metrics" in exporter.get("").text
    assert exporter.get("-/healthy").text == "OK\n"
    assert exporter.get("nothing-here").status_code == 404
