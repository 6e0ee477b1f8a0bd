"""Measure a steady scrape's CPU when the window's tasks are on many hosts, against one host.

Two worlds of the same size and motion (``evolving_world.py``: ``--tasks`` tasks of one URL,
a few new tasks and a few dozen URLs finishing per step) differ only in their hosts: every
task on one host, or each on its own. Each is served by the simulated API in a process of
its own; the exporter runs as ``python -m exporter`` (prefetch alone, ``MAX_STORED_TASKS``
above the world's size), is scraped once (a full sync), then once per step (a steady
scrape between full syncs), and its CPU is read from /proc around each scrape (see
``benchkit.CpuReading``). A steady scrape publishes ``MAX_DOMAIN_SERIES`` (100) domains
either way: what it costs should not grow with the hosts the window holds. The figure is
the median steady scrape of the many-hosts world over that of the one-host world, in the
same run; a summary with PASS/FAIL ends it.

    python benchmarks/bench_domains.py            # 90,000 tasks, a few minutes
    python benchmarks/bench_domains.py --quick    # tiny worlds, seconds (targets not meant)
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench_scrape import ROOT, Exporter
from bench_store_bound import SCRAPE_TIMEOUT, exporter, world
from benchkit import CpuReading, Verdict, cpu_between, ms, summary, table

# A steady scrape of many hosts may cost this much more than one of a single host.
RATIO_TARGET: Final = 1.5


@dataclass(frozen=True)
class Plan:
    """The worlds' size, the scrapes, the target; ``--quick`` shrinks them."""

    tasks: int
    steady_scrapes: int
    quick: bool = False


FULL: Final = Plan(tasks=90_000, steady_scrapes=9)
QUICK: Final = Plan(tasks=500, steady_scrapes=3, quick=True)


@dataclass(frozen=True)
class Measured:
    """One world's scrapes: the full sync's CPU and every steady scrape's."""

    hosts: int
    full: float
    steady: list[float]


def scrape_cpu(running: Exporter) -> float:
    """One scrape of /metrics, which must succeed; the exporter's CPU seconds for it."""
    before = CpuReading.of(running.process.pid)
    response = running.session.get(
        running.url + "metrics",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)},
        timeout=SCRAPE_TIMEOUT + 10,
    )
    used = cpu_between(before, CpuReading.of(running.process.pid))
    response.raise_for_status()
    if b'ucdn_prefetch_up{platform="cdn",project_id="default"} 1.0' not in response.content:
        raise RuntimeError("the scrape failed: a failed collection is not a measurement")
    return used


def measure(plan: Plan, hosts: int, checkout: Path) -> Measured:
    """The world of ``hosts`` hosts: a full sync, then steady scrapes one step apart."""
    args = ("--tasks", str(plan.tasks), "--urls-per-task", "1", "--hosts", str(hosts))
    settings = {"TASK_KINDS": "prefetch", "MAX_STORED_TASKS": str(2 * plan.tasks)}
    with tempfile.TemporaryDirectory() as scratch, world(*args) as api:
        log = Path(scratch) / "exporter.log"
        with exporter(api.url, settings, checkout, log) as running:
            full = scrape_cpu(running)
            steady = []
            for _ in range(plan.steady_scrapes):
                api.ask("step")
                time.sleep(0.2)  # let the world's step settle before the timed scrape
                steady.append(scrape_cpu(running))
    return Measured(hosts, full, steady)


def main(argv: Sequence[str] | None = None) -> int:
    """Both worlds, their table and the verdict; exit 0 when met (always with --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny worlds, seconds")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the tree to run")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    one, many = (measure(plan, hosts, args.checkout.resolve()) for hosts in (1, plan.tasks))
    table(
        f"Scrapes: {plan.tasks:,} tasks of one URL, on one host or each on its own",
        ["hosts", "full sync CPU", "steady scrape CPU (median)", "steady scrapes"],
        [
            [
                f"{m.hosts:,}",
                ms(m.full),
                ms(statistics.median(m.steady)),
                ", ".join(ms(cpu) for cpu in m.steady),
            ]
            for m in (one, many)
        ],
    )
    ratio = statistics.median(many.steady) / statistics.median(one.steady)
    verdict = Verdict(
        f"steady scrape, {plan.tasks:,} hosts vs one",
        f"{ms(statistics.median(many.steady))} vs {ms(statistics.median(one.steady))}",
        f"<= {RATIO_TARGET}x",
        ratio <= RATIO_TARGET,
        f"{ratio:.2f}x",
    )
    summary(
        [verdict],
        script="bench_domains.py",
        quick=plan.quick,
        elapsed=time.monotonic() - started,
        ratios=True,
    )
    return 0 if plan.quick or verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
