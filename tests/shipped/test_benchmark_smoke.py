"""The benchmarks' smoke runs: each script's ``--quick`` works and prints every figure.

Timings on shared CI machines prove nothing, so nothing here asserts one: this only keeps
the script that produces the README's Performance figures from rotting.
"""

import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e

FIGURES = (
    "### 1. CPU of one scrape",
    "### 2. Latency",
    "### 3. Memory and exposition size",
    "### 4. Scaling",
    "### Summary",
)
VERDICTS = (
    "| 1. CPU per scrape vs json.loads",
    "| 2. scrape time, parallel pages",
    "| 2. scrape time, sequential baseline",
    "| 3. peak RSS at",
    "| 3. exposition,",
    "| 4. marginal CPU per URL, step by step",
)


def run_quick(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script --quick`` with ``args``, from the repository, which must succeed."""
    result = subprocess.run(
        [sys.executable, script, *args, "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_prints_every_figure(
    script: str, figures: tuple[str, ...], verdicts: tuple[str, ...]
) -> None:
    """Run ``script --quick``: it must succeed, print every heading and end each verdict row."""
    result = run_quick(script)
    for line in (*figures, *verdicts):
        assert line in result.stdout, f"missing {line!r} in:\n{result.stdout}"
    for row in result.stdout.splitlines():
        if row.startswith(verdicts):
            assert row.rstrip(" |").endswith(("PASS", "FAIL"))


def test_quick_benchmark_prints_every_figure() -> None:
    assert_prints_every_figure("benchmarks/bench_scrape.py", FIGURES, VERDICTS)


INCREMENTAL_FIGURES = ("### Baseline: json.loads", "### Scrapes:", "### Memory:", "### Summary")
INCREMENTAL_VERDICTS = (
    "| 1. requests of a steady scrape",
    "| 1. ucdn_prefetch_collection_api_requests",
    "| 2. CPU of a steady scrape",
    "| 3. CPU of a full sync",
    "| figures agree with the world",
    "| 4. peak RSS (VmHWM) at",
    "| 4. figures agree with the world at",
)


def test_quick_incremental_benchmark_prints_every_figure() -> None:
    assert_prints_every_figure(
        "benchmarks/bench_incremental.py", INCREMENTAL_FIGURES, INCREMENTAL_VERDICTS
    )


def test_quick_a_b_comparison_prints_both_medians_and_removes_its_worktree() -> None:
    result = run_quick("benchmarks/ab_steady.py", "HEAD")
    assert "### Steady scrapes in turns: HEAD (A) against this tree (B)" in result.stdout
    assert "| 1     | A then B |" in result.stdout and "| 2     | B then A |" in result.stdout
    assert "; B / A = " in result.stdout.splitlines()[-1]
    worktrees = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True, check=True
    )
    assert "ab-steady-" not in worktrees.stdout


ACCOUNT_FIGURES = ("### Scrapes", "requests per minute:", "### Summary")
ACCOUNT_VERDICTS = (
    "| 1. slowest scrape",
    "| 2. oldest figures after",
    "| 3. RetCode 153 provoked",
    "| 4. peak RSS (VmHWM)",
    "| 4. RSS growth over the last five scrapes",
    "| 5. requests per idle target / per active after",
)


def test_quick_account_benchmark_prints_every_figure() -> None:
    assert_prints_every_figure("benchmarks/bench_account.py", ACCOUNT_FIGURES, ACCOUNT_VERDICTS)


def test_the_store_benchmark_runs_and_prints_its_verdicts() -> None:
    """``bench_store_bound.py --quick``: a tiny world, every verdict printed; those of
    behaviour met (memory on a shared machine proves nothing at this size)."""
    result = run_quick("benchmarks/bench_store_bound.py")
    verdicts = [line for line in result.stdout.splitlines() if line.rstrip().endswith("|")]
    for figure, behaviour in (
        ("peak RSS (VmHWM) over every scrape", False),
        ("the bound fails the target", True),
        ("RSS flat while failing", False),
        ("the target recovers once the world is small", True),
    ):
        row = next((line for line in verdicts if line.startswith(f"| {figure}")), None)
        assert row is not None, result.stdout
        assert row.rstrip(" |").endswith(("PASS",) if behaviour else ("PASS", "FAIL")), row


def test_the_domains_benchmark_runs_and_prints_its_verdict() -> None:
    """``bench_domains.py --quick``: the table and the verdict's row, not whether it passed."""
    result = run_quick("benchmarks/bench_domains.py")
    assert "### Scrapes: 500 tasks of one URL" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| steady scrape,")]
    assert row.rstrip(" |").endswith(("PASS", "FAIL")), row
