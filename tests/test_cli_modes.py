"""The command line's other modes: --check-config, --once, and JSON logs."""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, exporter_args
from exposition import samples
from faultkit import Exporter
from simfaults import SimulatedApi

from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("UCDN_", "UCLOUD_"))}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def dataset(now: int) -> StaticDataset:
    return StaticDataset(
        {
            ("web", False): generate_tasks(12, 2, now=now),
            ("web", True): generate_tasks(3, 1, now=now),
        }
    )


def test_check_config_prints_a_table_and_exits_0_when_all_answer(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(
        *exporter_args(api), "--project-ids", "web", "--platforms", "cdn,dcdn", "--check-config"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "REACHABLE", "TASKS", "IN", "WINDOW", "TIME"]
    assert lines[1].split()[:3] == ["web/cdn", "yes", "12"]
    assert lines[2].split()[:3] == ["web/dcdn", "yes", "3"]
    assert api.request_count() == 2  # one signed call per target


def test_check_config_exits_1_and_says_why_when_a_target_fails(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(0))
    api.faults.ret_code(171, "Signature VerifyAC Error", target=("web", True))
    result = run(
        *exporter_args(api),
        "--project-ids",
        "web",
        "--platforms",
        "cdn,dcdn",
        "--max-retries",
        "0",
        "--check-config",
    )
    assert result.returncode == 1
    failing = next(line for line in result.stdout.splitlines() if line.startswith("web/dcdn"))
    assert "no (api_error: RetCode 171" in failing
    # The gateway's X-UCLOUD-REQUEST-UUID, what the provider's support asks for.
    assert re.search(rf"; request {UUID}\)", failing)


def test_once_writes_the_exposition_to_stdout(simulator: Callable[..., SimulatedApi]) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(*exporter_args(api), "--project-ids", "web", "--task-kinds", "prefetch", "--once")
    assert result.returncode == 0, result.stderr
    metrics = samples(result.stdout)
    assert (
        metrics[("ucdn_prefetch_up", frozenset({("project_id", "web"), ("platform", "cdn")}))] == 1
    )
    assert not any(name.startswith("ucdn_refresh_") for name, _ in metrics)


def test_once_collects_every_kind_and_exits_0_only_when_all_are_up(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(*exporter_args(api), "--project-ids", "web", "--once")
    metrics = samples(result.stdout)
    target = frozenset({("project_id", "web"), ("platform", "cdn")})
    up = [metrics[(f"ucdn_{kind}_up", target)] for kind in ("prefetch", "refresh")]
    assert up[0] == 1
    assert result.returncode == (0 if all(value == 1 for value in up) else 1), result.stderr
    assert api.request_count() >= 2  # one collection of each kind


def test_once_replaces_the_output_file_atomically_and_exits_1_on_failure(
    simulator: Callable[..., SimulatedApi], tmp_path: Path
) -> None:
    output = tmp_path / "ucdn.prom"
    output.write_text("old contents\n")
    api = simulator(dataset(int(time.time())))
    api.faults.http_error(500)
    result = run(
        *exporter_args(api),
        "--project-ids",
        "web",
        "--max-retries",
        "0",
        "--once",
        "--output",
        str(output),
    )
    assert result.returncode == 1
    text = output.read_text()
    assert "old contents" not in text
    assert 'ucdn_prefetch_up{platform="cdn",project_id="web"} 0.0' in text
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ucdn.prom"]  # no temporary file left


def test_json_logs_are_one_object_per_line(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = simulator(dataset(0))
    api.faults.bad_json()
    exporter = start_exporter(*exporter_args(api), "--log-format", "json", "--max-retries", "0")
    assert exporter.get().status_code == 200
    exporter.stop()
    records = [json.loads(line) for line in exporter.log().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    failure = next(r for r in records if r["msg"] == "collection failed")
    assert failure["reason"] == "invalid_response"
    assert failure["project_id"] == "default"
    assert isinstance(failure["duration_seconds"], float)
    assert re.fullmatch(UUID, failure["request_id"])  # the answer's X-UCLOUD-REQUEST-UUID


def test_credentials_in_the_api_url_stay_out_of_the_start_up_log(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = simulator(dataset(0))
    password = "url-password-3b9f1c"
    url = api.url.replace("http://", f"http://gateway-user:{password}@")
    exporter = start_exporter(*exporter_args(api), "--api-url", url)
    assert exporter.get().status_code == 200
    exporter.stop()
    log = exporter.log()
    assert "msg=started" in log and "<redacted>@127.0.0.1" in log
    assert password not in log and "gateway-user" not in log


def test_a_normal_start_loads_no_simulator_code() -> None:
    # The simulator is for --demo alone: the command line must not import it up front.
    probe = "import sys, exporter.cli; print('exporter.simulator' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "False"
