"""Measure the exporter's memory while a gateway adds thousands of finished tasks per collection.

One target, a world that grows between scrapes (``evolving_world.py`` with
``--new-finished-tasks``: every step adds that many tasks, already finished, inside the
window, listed as prefetch and as refresh tasks alike, so that both kinds' stores grow:
the worst case of the default targets), served by the simulated API in a process of its
own. The exporter runs as ``python -m exporter`` with its default settings (both kinds of
task, the default ``MAX_STORED_TASKS`` unless ``--max-stored-tasks`` says otherwise; steps
come seconds apart, so ``OVERLAP_SECONDS`` is 0), is scraped over HTTP once per step, and
its memory is read from ``/proc`` after each scrape: ``VmRSS`` (resident now) and
``VmHWM`` (the most it ever held).

The store of a target holds at most ``MAX_STORED_TASKS`` tasks: the collection that would
pass the bound fails the target (``up 0``) and drops its store, every later one starts
over with a full sync that obeys the same bound, and once the world is small again
(``shrink``: the world as it began) the target is ``up 1``. Each row says what one
scrape found; the summary checks that peak RSS stays under 256 MB (the shipped
Deployment's limit is 256 MiB) on every scrape, that the target failed once the bound was
passed, that memory stays flat while it fails however the world grows, and that it
recovers.

    python benchmarks/bench_store_bound.py               # 25,000 tasks a step, minutes
    python benchmarks/bench_store_bound.py --quick       # tiny, seconds (targets not meant)
    python benchmarks/bench_store_bound.py --checkout ../other-tree   # another revision
"""

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench_scrape import ROOT, Exporter, serving
from benchkit import CpuReading, Verdict, cpu_between, free_port, stop, summary, table
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY

SCRAPE_TIMEOUT: Final = 60.0
# A target's samples: the default project on CDN.
TARGET_LABELS: Final = {"project_id": "default", "platform": "cdn"}
# Past the bound each collection is a full sync that fails again: a few more scrapes of
# the grown world show that memory stays put, within FLAT_MB (the allocator's own slack).
FAILING_SCRAPES: Final = 3
FLAT_MB: Final = 10.0


@dataclass(frozen=True)
class Plan:
    """The world's size and growth, the exporter's bound, and the targets."""

    tasks: int
    new_finished_tasks: int
    steps: int
    max_stored_tasks: int | None  # None: the exporter's default
    rss_target_mb: float = 256.0
    quick: bool = False


FULL: Final = Plan(tasks=1000, new_finished_tasks=25_000, steps=8, max_stored_tasks=None)
QUICK: Final = Plan(tasks=50, new_finished_tasks=400, steps=4, max_stored_tasks=1000, quick=True)


@dataclass(frozen=True)
class Row:
    """One scrape: the world, what the exporter published, and its memory and CPU after it."""

    label: str
    world_tasks: int
    up: bool
    tasks_published: int
    rss_mb: float
    peak_mb: float
    cpu: float
    wall: float


@dataclass
class World:
    """The growing world as a process, moved on through its stdin."""

    process: "subprocess.Popen[str]"
    url: str

    def ask(self, command: str) -> int:
        """Send ``step``, ``state`` or ``shrink``; the world's task count after it."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return int(json.loads(self.process.stdout.readline())["task_count"])


@contextlib.contextmanager
def world(*args: str) -> Iterator[World]:
    """``evolving_world.py`` with ``args``, served by the simulated API in its own process."""
    command = [sys.executable, str(ROOT / "benchmarks" / "evolving_world.py"), *args]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"world did not start: {url!r}")
        yield World(process, url)
    finally:
        stop(process)


@contextlib.contextmanager
def exporter(
    api_url: str, settings: Mapping[str, str], checkout: Path, log: Path
) -> Iterator[Exporter]:
    """``python -m exporter`` from ``checkout``: its defaults, but for the world's URL and
    keys, a 60 s scrape timeout and ``settings`` (names without the prefix)."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("UCDN_")}
    env["PYTHONPATH"] = str(checkout)
    chosen = {
        "API_URL": api_url,
        "PUBLIC_KEY": DEMO_PUBLIC_KEY,
        "PRIVATE_KEY": DEMO_PRIVATE_KEY,
        "QUOTA_INTERVAL_SECONDS": "0",  # the world has no domains
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "MAX_SCRAPE_TIMEOUT_SECONDS": str(SCRAPE_TIMEOUT),
        "LOG_LEVEL": "warning",
        **settings,
    }
    env.update({f"UCDN_EXPORTER_{name}": value for name, value in chosen.items()})
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter"], cwd=checkout, env=env, stderr=stderr
        )
        with serving(process, port) as running:
            yield running


def resident_mb(pid: int) -> float:
    """VmRSS: what the process holds in memory now."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
    if found is None:
        raise RuntimeError("no VmRSS in /proc status")
    return int(found.group(1)) / 1024


def scrape(running: Exporter, label: str, world_tasks: int) -> Row:
    """One scrape of /metrics, and the exporter's memory after it."""
    cpu = CpuReading.of(running.process.pid)
    started = time.perf_counter()
    response = running.session.get(
        running.url + "metrics",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)},
        timeout=SCRAPE_TIMEOUT + 10,
    )
    wall = time.perf_counter() - started
    used = cpu_between(cpu, CpuReading.of(running.process.pid))
    response.raise_for_status()
    up, tasks = False, 0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.items() >= TARGET_LABELS.items():
                if sample.name == "ucdn_prefetch_up":
                    up = sample.value == 1
                elif sample.name == "ucdn_prefetch_tasks":
                    tasks += int(sample.value)
    return Row(
        label,
        world_tasks,
        up,
        tasks,
        resident_mb(running.process.pid),
        running.peak_rss_mb(),
        used,
        wall,
    )


def failure_details(log: Path) -> list[str]:
    """The ``detail`` of every ``collection failed`` line the exporter logged."""
    return re.findall(r'msg="collection failed".*?detail="([^"]*)"', log.read_text())


def run(plan: Plan, checkout: Path) -> tuple[list[Row], list[str]]:
    """Grow the world step by step, scraping after each step; then shrink it and scrape."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "exporter.log"
        growing = (
            *("--tasks", str(plan.tasks), "--urls-per-task", "1"),
            *("--new-tasks", "0", "--finished-urls", "0"),
            *("--new-finished-tasks", str(plan.new_finished_tasks)),
            "--refresh-too",  # both kinds of the default targets grow: the worst case
        )
        # Steps come seconds apart: a collection asks for the tasks created since the last
        # one, not for the last five minutes' again (the default's margin for late listings).
        settings = {"OVERLAP_SECONDS": "0"}
        if plan.max_stored_tasks is not None:
            settings["MAX_STORED_TASKS"] = str(plan.max_stored_tasks)
        with world(*growing) as api, exporter(api.url, settings, checkout, log) as running:
            rows.append(scrape(running, "first", api.ask("state")))
            for step in range(1, plan.steps + 1):
                rows.append(scrape(running, f"step {step}", api.ask("step")))
            size = api.ask("state")
            for again in range(1, FAILING_SCRAPES + 1):
                rows.append(scrape(running, f"again {again}", size))
            size = api.ask("shrink")
            rows.append(scrape(running, "shrunk", size))
            rows.append(scrape(running, "shrunk, again", size))
        details = failure_details(log)
    return rows, details


def verdicts(plan: Plan, rows: Sequence[Row], details: Sequence[str]) -> list[Verdict]:
    """Memory under the target on every scrape, the bound's failure, flat memory while
    failing, recovery."""
    peak = max(row.peak_mb for row in rows)
    grown = [row for row in rows if not row.label.startswith("shrunk")]
    first_failure = next((index for index, row in enumerate(grown) if not row.up), len(grown))
    failing = grown[first_failure:]
    last = [row.rss_mb for row in failing[-FAILING_SCRAPES - 1 :]]
    bound = [detail for detail in details if "max_stored_tasks" in detail]
    return [
        Verdict(
            "peak RSS (VmHWM) over every scrape",
            f"{peak:.0f} MB",
            f"< {plan.rss_target_mb:.0f} MB",
            peak < plan.rss_target_mb,
        ),
        Verdict(
            "the bound fails the target",
            f"{len(failing)} of {len(grown)} scrapes up 0, {len(bound)} of {len(details)} "
            "failures name the bound",
            "up 0 once past it, every failure naming max_stored_tasks",
            bool(failing) and not any(row.up for row in failing) and len(bound) == len(details),
        ),
        Verdict(
            "RSS flat while failing",
            f"{min(last, default=0):.0f} to {max(last, default=0):.0f} MB over the last "
            f"{len(last)} failing scrapes, the world growing",
            f"within {FLAT_MB:.0f} MB",
            len(last) > 1 and max(last) - min(last) < FLAT_MB,
        ),
        Verdict(
            "the target recovers once the world is small",
            ", ".join(
                f"{row.label}: up {int(row.up)}, {row.tasks_published:,} of {row.world_tasks:,}"
                " tasks"
                for row in rows[-2:]
            ),
            "up 1 with the world's tasks after the shrink",
            all(row.up and row.tasks_published == row.world_tasks for row in rows[-2:]),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plan; exit 0 when every target is met (always 0 with --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny world, seconds")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the tree to run")
    parser.add_argument("--max-stored-tasks", type=int, help="the bound (default: the tree's)")
    parser.add_argument("--new-finished-tasks", type=int, help="tasks added per step")
    parser.add_argument("--steps", type=int, help="steps of growth")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides = {
        "max_stored_tasks": args.max_stored_tasks,
        "new_finished_tasks": args.new_finished_tasks,
        "steps": args.steps,
    }
    plan = Plan(**{**vars(plan), **{k: v for k, v in overrides.items() if v is not None}})
    started = time.monotonic()
    rows, details = run(plan, args.checkout.resolve())
    bound = "the default" if plan.max_stored_tasks is None else f"{plan.max_stored_tasks:,}"
    table(
        f"Scrapes: +{plan.new_finished_tasks:,} finished tasks a step, MAX_STORED_TASKS {bound}",
        ["scrape", "world tasks", "up", "tasks published", "RSS", "peak RSS", "CPU", "wall"],
        [
            [
                row.label,
                f"{row.world_tasks:,}",
                str(int(row.up)),
                f"{row.tasks_published:,}",
                f"{row.rss_mb:.0f} MB",
                f"{row.peak_mb:.0f} MB",
                f"{row.cpu:.2f} s",
                f"{row.wall:.2f} s",
            ]
            for row in rows
        ],
    )
    for detail in dict.fromkeys(details):
        print(f"failure: {detail}")
    results = verdicts(plan, rows, details)
    summary(
        results,
        script="bench_store_bound.py",
        quick=plan.quick,
        elapsed=time.monotonic() - started,
        ratios=False,
    )
    return 0 if plan.quick or all(verdict.passed for verdict in results) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
