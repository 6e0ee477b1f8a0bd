"""The domains benchmark's smoke run: ``bench_domains.py --quick`` works and prints its figure.

Timings on shared machines prove nothing at this size, so only the table and the verdict's
row are checked, not whether it passed.
"""

import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e


def test_the_domains_benchmark_runs_and_prints_its_verdict() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_domains.py", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Scrapes: 500 tasks of one URL" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| steady scrape,")]
    assert row.rstrip(" |").endswith(("PASS", "FAIL")), row
