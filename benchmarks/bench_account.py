"""Measure the exporter at account scale: thousands of targets behind a rate-limited gateway.

The workload: 500 projects x cdn, dcdn x prefetch, refresh = 2,000 targets, 20 tasks each
(``--idle-share`` of the targets, 0.9 by default, hold only finished work; the others
have unfinished tasks), served by the simulated API in this process, 50 ms away and
answering RetCode 153 to more than 25 requests in any one second. The scrapes are made and
read in a process of their own: reading a 19 MB exposition here would hold up the
simulated gateway's threads, which note when each request arrives for its rate limit, and
requests held up together would be noted as a burst the exporter never sent. The exporter runs as
``python -m exporter`` with background collection, told 20 requests per second, and is
scraped every 60 s with a 30 s timeout for 10 minutes, as Prometheus would.

Figures and their targets: 1. every scrape answers within the scrape timeout (30 s);
2. after the first three minutes every target's figures are at most 180 s old
(``ucdn_figures_age_seconds``); 3. no RetCode 153 provoked; 4. peak RSS (VmHWM) at most
200 MB, and no growth of RSS over the last five scrapes (within 2 MB); 5. requests spent
on an idle target at most a third of those spent on an active one after the first three
minutes (both kinds, from the simulator's log of requests). Also printed: requests per
minute, the exporter's thread count and the exposition's size. A summary with PASS/FAIL ends it.

    python benchmarks/bench_account.py                          # the workload, 10 minutes
    python benchmarks/bench_account.py --minutes 4 --projects 100   # a smaller one
    python benchmarks/bench_account.py --quick                  # seconds (targets not meant)
"""

import argparse
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import requests
from benchkit import Verdict, free_port, stop, summary, table

from exporter.gateway.answers import PREFETCH_ACTION, REFRESH_ACTION
from exporter.metrics import FIGURES_AGE
from exporter.simulator.account import numbered_projects
from exporter.simulator.hooks import FixedDelay
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import GeneratedDataset

ROOT: Final = Path(__file__).resolve().parent.parent
START_TIMEOUT: Final = 60.0
MOST_PEAK_RSS_MB: Final = 200.0
FLAT_MB: Final = 2.0  # "no growth": the allocator's own slack
IDLE_TO_ACTIVE: Final = 1 / 3
TASK_ACTIONS: Final = (PREFETCH_ACTION, REFRESH_ACTION)
_SAMPLE = re.compile(rb"^(\w+)\{([^}]*)\} (\S+)$")


@dataclass(frozen=True)
class Plan:
    """The workload, the exporter's settings and the targets."""

    projects: int
    minutes: float
    scrape_interval: float
    scrape_timeout: float
    warm_up: float  # seconds before the age of every target's figures is judged
    max_staleness: float
    latency_ms: int
    gateway_rate: int
    rate: float
    tasks: int
    idle_share: float

    @property
    def targets(self) -> int:
        """Targets: projects x platforms x kinds."""
        return self.projects * 2 * 2


@dataclass(frozen=True)
class Reading:
    """One scrape and the exporter's state right after it."""

    at: float  # seconds since the exporter started
    seconds: float
    status: int
    size: int
    up: int
    oldest: float | None  # the largest figures' age; None: some target has none yet
    rate_limited: float
    rss_mb: float
    peak_mb: float
    threads: int


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan the command line asks for."""
    if args.quick:
        return Plan(
            projects=args.projects or 5,
            minutes=args.minutes or 0.2,
            scrape_interval=2,
            scrape_timeout=5,
            warm_up=6,
            max_staleness=10,
            latency_ms=50,
            gateway_rate=25,
            rate=20,
            tasks=20,
            idle_share=args.idle_share,
        )
    return Plan(
        projects=args.projects or 500,
        minutes=args.minutes or 10,
        scrape_interval=60,
        scrape_timeout=30,
        warm_up=180,
        max_staleness=180,
        latency_ms=50,
        gateway_rate=25,
        rate=20,
        tasks=20,
        idle_share=args.idle_share,
    )


@contextmanager
def gateway(plan: Plan) -> Iterator[tuple[SimulatedApi, GeneratedDataset]]:
    """The simulated account, served in this process (its log of requests is read here)."""
    dataset = GeneratedDataset(plan.tasks, 10, now=int(time.time()), idle_share=plan.idle_share)
    api = SimulatedApi(
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        dataset,
        faults=FixedDelay(plan.latency_ms / 1000),
        projects=numbered_projects(plan.projects),
        rate_limit=plan.gateway_rate,
    ).start()
    try:
        yield api, dataset
    finally:
        api.stop()


@contextmanager
def exporter(plan: Plan, api_url: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The exporter with background collection, once it answers ``/-/ready``."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "exporter",
        "--listen-address",
        f"127.0.0.1:{port}",
        "--api-url",
        api_url,
        "--public-key",
        DEMO_PUBLIC_KEY,
        "--private-key",
        DEMO_PRIVATE_KEY,
        "--project-ids",
        "auto",
        "--platforms",
        "cdn,dcdn",
        "--task-kinds",
        "prefetch,refresh",
        "--background-collection",
        "--max-staleness-seconds",
        str(plan.max_staleness),
        "--max-api-requests-per-second",
        str(plan.rate),
        "--max-scrape-timeout-seconds",
        str(plan.scrape_timeout),
        "--log-level",
        "warning",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}/"
    try:
        give_up = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"exporter exited with {process.returncode}: {log.read_text()}")
            try:
                if requests.get(url + "-/ready", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError("exporter not ready in time")
            time.sleep(0.1)
        yield process, url
    finally:
        stop(process)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) and Threads, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            found[name] = int(rest.split()[0])
    return found


def read(body: bytes, targets: int) -> tuple[int, float | None, float]:
    """Targets up, the oldest figures' age (None: a target has none yet), RetCode 153s."""
    up = 0
    ages: list[float] = []
    rate_limited = 0.0
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        if name in (b"ucdn_prefetch_up", b"ucdn_refresh_up"):
            up += float(value) == 1
        elif name == FIGURES_AGE.name.encode():
            ages.append(float(value))
        elif name == b"ucdn_api_requests_total" and b'outcome="rate_limited"' in labels:
            rate_limited += float(value)
    oldest = max(ages) if len(ages) == targets else None
    return up, oldest, rate_limited


def scrape(plan: Plan, pid: int, url: str, started: float) -> Reading:
    """One scrape of ``/metrics``, as Prometheus makes it, and the process right after."""
    at = time.monotonic() - started
    begun = time.perf_counter()
    try:
        response = requests.get(
            url + "metrics",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": str(plan.scrape_timeout)},
            timeout=plan.scrape_timeout,
        )
        status, body = response.status_code, response.content
    except requests.Timeout:
        status, body = 0, b""
    seconds = time.perf_counter() - begun
    up, oldest, rate_limited = read(body, plan.targets)
    state = proc_status(pid)
    return Reading(
        at,
        seconds,
        status,
        len(body),
        up,
        oldest,
        rate_limited,
        state["VmRSS"] / 1024,
        state["VmHWM"] / 1024,
        state["Threads"],
    )


def requests_per_target(
    api: SimulatedApi, dataset: GeneratedDataset, since: float
) -> tuple[float, float, int, int]:
    """Mean task requests per idle target and per active target from ``since`` (monotonic)
    on, and how many of each."""
    counts: Counter[tuple[str, bool]] = Counter()
    for record in api.requests:
        if record.received >= since and record.action in TASK_ACTIONS and record.target:
            counts[record.target[0], bool(record.target[1])] += 1
    targets = [(p.project_id, is_dcdn) for p in api.account.projects() for is_dcdn in (False, True)]
    idle = [counts[t] for t in targets if dataset.is_idle(*t)]
    active = [counts[t] for t in targets if not dataset.is_idle(*t)]
    return _mean(idle), _mean(active), len(idle), len(active)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(plan: Plan) -> list[Verdict]:
    """The workload; print each scrape's row, return the verdicts."""
    print(
        f"{plan.targets} targets ({plan.projects} projects x cdn, dcdn x prefetch, refresh), "
        f"{plan.tasks} tasks each, {plan.idle_share:.0%} idle; gateway {plan.latency_ms} ms "
        f"away, RetCode 153 past {plan.gateway_rate}/s; exporter told {plan.rate:g}/s; a "
        f"scrape every {plan.scrape_interval:g} s ({plan.scrape_timeout:g} s timeout) for "
        f"{plan.minutes:g} min",
        flush=True,
    )
    readings: list[Reading] = []
    with (
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as scraper,
        tempfile.TemporaryDirectory() as folder,
        gateway(plan) as (api, dataset),
        exporter(plan, api.url, Path(folder) / "exporter.log") as (process, url),
    ):
        started = time.monotonic()
        end = started + plan.minutes * 60
        next_scrape = started
        while next_scrape < end:
            time.sleep(max(0.0, next_scrape - time.monotonic()))
            reading = scraper.submit(scrape, plan, process.pid, url, started).result()
            readings.append(reading)
            print(
                f"  {reading.at:6.0f} s: {reading.seconds:5.2f} s, {reading.size / 1e6:5.1f} MB,"
                f" {reading.up} up, oldest "
                f"{'-' if reading.oldest is None else f'{reading.oldest:.0f} s'}, RSS "
                f"{reading.rss_mb:.0f} MB (peak {reading.peak_mb:.0f}), {reading.threads} "
                f"threads, {len(api.requests)} requests",
                flush=True,
            )
            next_scrape += plan.scrape_interval
        elapsed_minutes = (time.monotonic() - started) / 60
        total_requests = len(api.requests)
        refused = api.rate_limited
        idle_mean, active_mean, idle_count, active_count = requests_per_target(
            api, dataset, started + plan.warm_up
        )
    table(
        "Scrapes",
        ["at", "seconds", "status", "exposition", "up", "oldest figures", "RSS", "peak", "threads"],
        [
            [
                f"{r.at:.0f} s",
                f"{r.seconds:.2f}",
                str(r.status),
                f"{r.size / 1e6:.1f} MB",
                str(r.up),
                "-" if r.oldest is None else f"{r.oldest:.0f} s",
                f"{r.rss_mb:.0f} MB",
                f"{r.peak_mb:.0f} MB",
                str(r.threads),
            ]
            for r in readings
        ],
    )
    judged = [r for r in readings if r.at >= plan.warm_up]
    ages = [r.oldest for r in judged]
    oldest = None if not ages or None in ages else max(a for a in ages if a is not None)
    slowest = max(r.seconds for r in readings)
    answered = all(r.status == 200 for r in readings)
    peak = max(r.peak_mb for r in readings)
    last = [r.rss_mb for r in readings[-5:]]
    growth = last[-1] - last[0]
    ratio = idle_mean / active_mean if active_mean else float("inf")
    print(
        f"\nrequests per minute: {total_requests / elapsed_minutes:.0f} "
        f"(budget {plan.rate * 60:.0f}); threads: {readings[-1].threads} (most "
        f"{max(r.threads for r in readings)}); exposition: {readings[-1].size / 1e6:.1f} MB; "
        f"task requests after {plan.warm_up:g} s per idle target {idle_mean:.1f} "
        f"({idle_count}), per active target {active_mean:.1f} ({active_count})"
    )
    return [
        Verdict(
            "1. slowest scrape",
            f"{slowest:.2f} s{'' if answered else ' (not every scrape answered 200)'}",
            f"within {plan.scrape_timeout:g} s",
            answered and slowest < plan.scrape_timeout,
        ),
        Verdict(
            f"2. oldest figures after {plan.warm_up:g} s",
            "a target without figures" if oldest is None else f"{oldest:.0f} s",
            f"at most {plan.max_staleness:g} s",
            bool(judged) and oldest is not None and oldest <= plan.max_staleness,
        ),
        Verdict(
            "3. RetCode 153 provoked",
            f"{refused} (exporter counted {readings[-1].rate_limited:.0f})",
            "none",
            refused == 0,
        ),
        Verdict(
            "4. peak RSS (VmHWM)",
            f"{peak:.0f} MB",
            f"at most {MOST_PEAK_RSS_MB:.0f} MB",
            peak <= MOST_PEAK_RSS_MB,
        ),
        Verdict(
            "4. RSS growth over the last five scrapes",
            f"{growth:+.1f} MB",
            f"at most {FLAT_MB:g} MB",
            len(readings) >= 5 and growth <= FLAT_MB,
        ),
        Verdict(
            f"5. requests per idle target / per active after {plan.warm_up:g} s",
            f"{ratio:.2f}",
            f"at most {IDLE_TO_ACTIVE:.2f}",
            ratio <= IDLE_TO_ACTIVE,
        ),
    ]


def main() -> int:
    """Run the workload, print the figures and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run, seconds")
    parser.add_argument("--projects", type=int, help="projects (default 500; quick 5)")
    parser.add_argument("--minutes", type=float, help="minutes of scrapes (default 10)")
    parser.add_argument(
        "--idle-share", type=float, default=0.9, help="share of idle targets (default 0.9)"
    )
    args = parser.parse_args()
    plan = plan_of(args)
    started = time.monotonic()
    verdicts = run(plan)
    summary(
        verdicts,
        script="bench_account.py",
        quick=args.quick,
        elapsed=time.monotonic() - started,
        ratios=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
