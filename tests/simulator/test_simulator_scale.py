"""An account at scale: generated tasks for thousands of targets, and the simulator's options
for it on the command line (projects, tasks per target, latency, rate limit, IAM refusal).

The dataset's tests run in process; the command line's start the simulator as a process.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from simfaults import SimulatedApi

from exporter.gateway.answers import DOMAINS_ACTION, PREFETCH_ACTION, REFRESH_ACTION
from exporter.gateway.signature import ParamValue, signed_form
from exporter.simulator.account import numbered_projects
from exporter.simulator.protocol import (
    DAY_SECONDS,
    DEMO_PRIVATE_KEY,
    DEMO_PUBLIC_KEY,
    PROJECT_LIST_ACTION,
)
from exporter.simulator.static import GeneratedDataset

NOW = 1_700_000_000
TIMEOUT = (2, 10)
EVERYTHING = (0, 2**31)


def call(url: str, action: str, **params: ParamValue) -> dict[str, Any]:
    form = signed_form({"Action": action, **params}, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
    answer: dict[str, Any] = requests.post(url, data=form, timeout=TIMEOUT).json()
    return answer


# --- the generated dataset, in process


def test_every_target_has_its_own_tasks_the_same_on_every_run() -> None:
    dataset = GeneratedDataset(20, 3, seed=7, now=NOW)
    again = GeneratedDataset(20, 3, seed=7, now=NOW)
    other_seed = GeneratedDataset(20, 3, seed=8, now=NOW)
    first = dataset.tasks(("org-0001", False), *EVERYTHING)
    assert len(first) == 20 and all(len(task["UrlLists"]) == 3 for task in first)
    assert len({task["TaskId"] for task in first}) == 20
    assert again.tasks(("org-0001", False), *EVERYTHING) == first
    assert other_seed.tasks(("org-0001", False), *EVERYTHING) != first
    assert dataset.tasks(("org-0002", False), *EVERYTHING) != first
    assert dataset.tasks(("org-0001", True), *EVERYTHING) != first
    created = [task["CreateTime"] for task in first]
    assert created == sorted(created, reverse=True)  # newest first
    assert all(NOW - DAY_SECONDS + 3600 <= moment <= NOW for moment in created)


def test_windows_refresh_tasks_and_domains_of_a_generated_target() -> None:
    dataset = GeneratedDataset(20, 2, now=NOW)
    every = dataset.tasks(("org-0003", False), *EVERYTHING)
    middle = every[10]["CreateTime"]
    assert dataset.tasks(("org-0003", False), middle, NOW) == [
        task for task in every if task["CreateTime"] >= middle
    ]
    refreshes = dataset.refresh_tasks(("org-0003", False), *EVERYTHING)
    assert len(refreshes) == 20 and {task["Type"] for task in refreshes} == {"file", "dir"}
    domains = dataset.domains("org-0003")
    assert len(domains) == 5 and domains != dataset.domains("org-0004")
    quota = dataset.quota("org-0003", domains[0].domain_id)
    assert quota is not None and quota.prefetch_quota == 500
    assert dataset.quota("org-0004", domains[0].domain_id) is None
    assert dataset.prefetch_enabled("org-0003", domains[0].domain_id) is True
    assert dataset.prefetch_enabled("org-0003", "ucdn-nowhere") is None
    assert GeneratedDataset(0, now=NOW).tasks(("org-0001", False), *EVERYTHING) == []
    with pytest.raises(ValueError):
        GeneratedDataset(-1, now=NOW)


def test_an_account_of_two_thousand_projects_serves_any_of_them() -> None:
    dataset = GeneratedDataset(20, 1, now=NOW)
    projects = numbered_projects(2000)
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, projects=projects, clock=lambda: NOW
    ) as api:
        listed = call(api.url, PROJECT_LIST_ACTION)
        assert listed["ProjectCount"] == 2000 and len(listed["ProjectSet"]) == 2000
        last = call(api.url, PREFETCH_ACTION, ProjectId="org-2000", IsDcdn=True, Limit=5)
        assert last["TotalCount"] == 20 and len(last["TaskList"]) == 5
        default = call(api.url, PREFETCH_ACTION)
        assert (
            default["TaskList"] == call(api.url, PREFETCH_ACTION, ProjectId="org-0001")["TaskList"]
        )
        assert call(api.url, PREFETCH_ACTION, ProjectId="org-2001")["RetCode"] == 292
        own = call(api.url, DOMAINS_ACTION, ProjectId="org-0500", QueryByProject=True)
        assert own["TotalCount"] == 5


# --- the command line


def simulator_process(*args: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )


@contextmanager
def running(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    process = simulator_process(*args)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def resident_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.e2e
def test_a_big_account_on_the_command_line_stays_small_and_answers_late() -> None:
    with running("--projects", "2000", "--tasks-per-target", "20", "--latency-ms", "40") as (
        url,
        process,
    ):
        listed = call(url, PROJECT_LIST_ACTION)
        assert listed["ProjectCount"] == 2000
        assert listed["ProjectSet"][0] == {
            "ProjectId": "org-0001",
            "ProjectName": "Project 0001",
            "IsDefault": True,
            "CreateTime": listed["ProjectSet"][0]["CreateTime"],
            "MemberCount": 2,
        }
        targets = [
            (f"org-{number:04d}", is_dcdn) for number in range(1, 2001) for is_dcdn in (False, True)
        ]

        def ask(target: tuple[str, bool]) -> tuple[int, int, float]:
            started = time.monotonic()
            answer = call(url, PREFETCH_ACTION, ProjectId=target[0], IsDcdn=target[1])
            return answer["RetCode"], len(answer["TaskList"]), time.monotonic() - started

        # Every target once, prefetch and refresh, 32 at a time: 40 ms each one after
        # another would take 160 s; the latency holds no thread busy.
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, targets))
        elapsed = time.monotonic() - started
        assert {(code, count) for code, count, _ in answers} == {(0, 20)}
        assert min(seconds for _, _, seconds in answers) >= 0.04
        assert elapsed < 60
        refreshed = call(url, REFRESH_ACTION, ProjectId="org-1234")
        assert refreshed["TotalCount"] == 20
        # 2,000 targets of 20 tasks of 10 URLs generated, a bounded few kept.
        assert resident_megabytes(process.pid) < 120


@pytest.mark.e2e
def test_the_command_line_refuses_the_project_list_and_limits_the_rate() -> None:
    with running("--refuse-project-list", "--rate-limit", "5", "--tasks", "3") as (url, _):
        codes = [call(url, PREFETCH_ACTION)["RetCode"] for _ in range(8)]
        # The first five of any second are answered: the others in that second are refused.
        assert codes[:5] == [0] * 5 and 153 in codes[5:]
        time.sleep(1.1)
        assert call(url, PROJECT_LIST_ACTION)["RetCode"] == 299
        assert call(url, PREFETCH_ACTION)["TotalCount"] == 3


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args",
    [
        ("--projects", "0"),
        ("--rate-limit", "0"),
        ("--tasks-per-target", "-1"),
        ("--latency-ms", "x"),
        ("--delay", "1", "--latency-ms", "5"),
        ("--tasks", "3", "--tasks-per-target", "3"),
    ],
)
def test_the_command_line_refuses_bad_options(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.simulator", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 2
    assert f"argument {args[-2]}" in result.stderr
