"""Measure incremental collection against the exporter's targets, every baseline taken in the run.

One target, a world that moves between scrapes (``evolving_world.py``: a few new tasks and a
few dozen URLs finishing per step, deterministically), served by the simulated API in a
process of its own so that its CPU is never counted as the exporter's. The exporter runs
as ``python -m exporter``, configured by its environment, and is scraped over HTTP; its CPU
is read from /proc around each scrape of ``/metrics`` (every thread's time on a CPU to the
nanosecond from ``/proc/PID/task/TID/schedstat``; utime + stime in 10 ms ticks from
``/proc/PID/stat`` where a thread ended between the two readings or the kernel keeps no
schedstat: see ``benchkit.CpuReading``), and its API requests from
``ucdn_api_requests_total`` on ``/exporter-metrics`` (which calls no API) around the same
scrape.

The baseline is the floor: ``json.loads`` of the whole window's page bodies, fetched from
the simulator with the exporter's own signed query, timed in a fresh Python process, the
fastest of five back-to-back runs (and of two such processes, one before the exporters
and one after). The exporter's CPU is the median of many scrapes of each kind, with the
mean beside it; a median of nanosecond readings is robust to the odd scrape that a
neighbour on the machine slowed down.

Figures and their targets: 1. API requests of a steady scrape (between full syncs), at
most 2 + ceil(unfinished / TASK_LOOKUP_BATCH), vs a full fetch; 2. CPU of a steady scrape
(its exposition by prometheus_client's encoders included), at most 0.5x json.loads; 3. CPU
of a full sync (RESYNC_SECONDS=0, so that every scrape is one), at most 1.0x json.loads;
4. peak RSS at 1,000,000 URLs after a full sync and a few steady scrapes, under 150 MB.
Every scrape's figures are also checked against the world's own counts. A summary with
PASS/FAIL ends it.

    python benchmarks/bench_incremental.py                    # the full run, a few minutes
    python benchmarks/bench_incremental.py --quick            # tiny workloads, seconds
    python benchmarks/bench_incremental.py --json out.json    # the verdicts as JSON too
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench_scrape import (
    COLLECTION_CAP,
    ROOT,
    SCRAPE_TIMEOUT,
    Exporter,
    Workload,
    page_bodies,
    serving,
)
from benchkit import Verdict, free_port, stop, summary, table
from evolving_world import WorldState
from prometheus_client.parser import text_string_to_metric_families

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY

SETTLE: Final = 0.2  # seconds of pause before each timed scrape
BASELINE_RUNS: Final = 5
DEFAULT_LOOKUP_BATCH: Final = 100  # the exporter's TASK_LOOKUP_BATCH default, which runs here


@dataclass(frozen=True)
class World:
    """A workload and how much of it moves per step."""

    workload: Workload
    unfinished_share: float = 0.03
    new_tasks: int = 3
    finished_urls: int = 40

    @property
    def label(self) -> str:
        return (
            f"{self.workload.label}, {self.unfinished_share:.0%} unfinished, per step "
            f"+{self.new_tasks} tasks and {self.finished_urls} URLs finished"
        )


@dataclass(frozen=True)
class Plan:
    """The worlds, repetitions and targets of one run; ``--quick`` shrinks every one of them."""

    cpu: World
    memory: World
    steady_scrapes: int
    full_scrapes: int
    memory_steady_scrapes: int
    steady_cpu_target: float = 0.5
    full_cpu_target: float = 1.0
    rss_target_mb: float = 150.0
    lookup_batch: int = DEFAULT_LOOKUP_BATCH
    quick: bool = False


FULL: Final = Plan(
    cpu=World(Workload(2000, 50)),
    memory=World(Workload(10000, 100)),
    steady_scrapes=30,
    full_scrapes=15,
    memory_steady_scrapes=3,
)
# The same shape in miniature: every figure and every line, in seconds, targets not meant.
QUICK: Final = Plan(
    cpu=World(Workload(40, 10, page_size=10), unfinished_share=0.05, new_tasks=1, finished_urls=4),
    memory=World(
        Workload(80, 10, page_size=10), unfinished_share=0.05, new_tasks=1, finished_urls=4
    ),
    steady_scrapes=3,
    full_scrapes=2,
    memory_steady_scrapes=2,
    quick=True,
)


# ---------------------------------------------------------------------------
# Processes


@dataclass
class Simulator:
    """The evolving world's simulator as a process: its URL, and a pipe that moves it on."""

    process: "subprocess.Popen[str]"
    url: str
    world: World

    def _ask(self, command: str) -> WorldState:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return WorldState(**answer)

    def step(self) -> WorldState:
        """Move the world one step on; its state once it has."""
        return self._ask("step")

    def state(self) -> WorldState:
        """The world's state as it is."""
        return self._ask("state")


@contextlib.contextmanager
def simulator(world: World) -> Iterator[Simulator]:
    """The evolving world served by the simulated API in its own process."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "evolving_world.py"),
        "--tasks",
        str(world.workload.tasks),
        "--urls-per-task",
        str(world.workload.urls_per_task),
        "--unfinished-share",
        str(world.unfinished_share),
        "--new-tasks",
        str(world.new_tasks),
        "--finished-urls",
        str(world.finished_urls),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # the simulator prints its URL first
        if not url.startswith("http://"):
            raise RuntimeError(f"simulator did not start: {url!r}")
        yield Simulator(process, url, world)
    finally:
        stop(process)


@contextlib.contextmanager
def exporter(
    api_url: str,
    page_size: int,
    resync_seconds: float | None = None,
    cache_seconds: int = 0,
    checkout: Path = ROOT,
) -> Iterator[Exporter]:
    """``python -m exporter`` configured by its environment only; ready when yielded.

    ``resync_seconds`` None leaves RESYNC_SECONDS at its default (a steady scrape between
    full syncs); 0 makes every scrape a full sync. ``cache_seconds`` is CACHE_SECONDS.
    ``checkout`` is the source tree the exporter runs from (its package comes first).
    """
    port = free_port()
    # Nothing of this shell's own exporter settings leaks in.
    env = {name: value for name, value in os.environ.items() if not name.startswith("UCDN_")}
    settings = {
        "DEMO": "false",
        "API_URL": api_url,
        "PUBLIC_KEY": DEMO_PUBLIC_KEY,
        "PRIVATE_KEY": DEMO_PRIVATE_KEY,
        "TASK_KINDS": "prefetch",
        "QUOTA_INTERVAL_SECONDS": "0",
        "PAGE_SIZE": str(page_size),
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "MAX_SCRAPE_TIMEOUT_SECONDS": str(SCRAPE_TIMEOUT),
        "REQUEST_TIMEOUT_SECONDS": str(SCRAPE_TIMEOUT),
        # The 1M-URL world is about 145 MB of JSON, past the default 32 MiB cap.
        "MAX_COLLECTION_BYTES": str(COLLECTION_CAP),
        "LOG_LEVEL": "warning",
        "CACHE_SECONDS": str(cache_seconds),
    }
    if resync_seconds is not None:
        settings["RESYNC_SECONDS"] = str(resync_seconds)
    env.update({f"UCDN_EXPORTER_{name}": value for name, value in settings.items()})
    process = subprocess.Popen([sys.executable, "-m", "exporter"], cwd=checkout, env=env)
    with serving(process, port) as running:
        yield running


# ---------------------------------------------------------------------------
# Reading the exposition


def samples(body: bytes, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample named ``name`` in a text exposition, by its labels."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
        if sample.name == name
    }


def by_label(body: bytes, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` by the value of one label (the others summed over)."""
    found: dict[str, float] = {}
    for labels, value in samples(body, name).items():
        key = dict(labels)[label]
        found[key] = found.get(key, 0.0) + value
    return found


def api_requests(running: Exporter) -> int:
    """The exporter's task-list requests so far, every outcome, from /exporter-metrics."""
    response = running.session.get(running.url + "exporter-metrics", timeout=30)
    response.raise_for_status()
    counted = samples(response.content, "ucdn_api_requests_total")
    return round(
        sum(value for labels, value in counted.items() if ("action", PREFETCH_ACTION) in labels)
    )


@dataclass(frozen=True)
class Scrape:
    """One scrape of /metrics and what it cost the exporter."""

    cpu: float
    wall: float
    requests: int  # from ucdn_api_requests_total, around the scrape
    reported: dict[str, float]  # ucdn_prefetch_collection_api_requests by sync; {} before it
    world: WorldState  # the world it saw
    agrees: bool  # its task and URL counts are the world's

    @property
    def sync(self) -> str:
        return "/".join(sorted(self.reported)) or "n/a"


def scrape(running: Exporter, world: WorldState) -> Scrape:
    """Scrape once, after a pause; check the figures against ``world``.

    The request counter is read before the pause, so that nothing of that request is
    still running in the exporter when the scrape's CPU is read.
    """
    before = api_requests(running)
    time.sleep(SETTLE)
    body, wall, cpu = running.scrape()
    requests = api_requests(running) - before
    reported = by_label(body, "ucdn_prefetch_collection_api_requests", "sync")
    tasks = by_label(body, "ucdn_prefetch_tasks", "status")
    urls = by_label(body, "ucdn_prefetch_urls", "status")
    agrees = tasks == {k: float(v) for k, v in world.tasks.items()} and urls == {
        k: float(v) for k, v in world.urls.items()
    }
    return Scrape(cpu, wall, requests, reported, world, agrees)


# ---------------------------------------------------------------------------
# The baseline, in a fresh process

_BASELINE_CODE: Final = """
import json, pathlib, sys, time
bodies = [path.read_bytes() for path in sorted(pathlib.Path(sys.argv[1]).iterdir())]
times = []
for _ in range(int(sys.argv[2])):
    started = time.process_time()
    for body in bodies:
        json.loads(body)
    times.append(time.process_time() - started)
print(min(times))
"""


def json_loads_floor(bodies: Sequence[bytes]) -> float:
    """CPU seconds of json.loads of every body: the fastest of five runs in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as directory:
        for index, body in enumerate(bodies):
            (Path(directory) / f"page-{index:05d}.json").write_bytes(body)
        time.sleep(SETTLE)
        result = subprocess.run(
            [sys.executable, "-c", _BASELINE_CODE, directory, str(BASELINE_RUNS)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
    return float(result.stdout)


# ---------------------------------------------------------------------------
# Figures


def fine_ms(seconds: float) -> str:
    """Milliseconds to a tenth: the readings are to the nanosecond."""
    return f"{seconds * 1000:.1f} ms"


@dataclass
class Run:
    """Figures measured so far, printed as they come and summarised at the end."""

    plan: Plan
    verdicts: list[Verdict] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)  # raw numbers, for --json

    def verdict(self, figure: str, measured: str, ratio: str, target: str, passed: bool) -> None:
        self.verdicts.append(Verdict(figure, measured, target, passed, ratio))
        result = "PASS" if passed else "FAIL"
        print(f"{result}  {figure}: {measured} ({ratio}), target {target}", flush=True)


def expected_full_requests(state: WorldState, page_size: int) -> int:
    """Pages of a full fetch: every full page, then the short (maybe empty) one that ends it."""
    return state.task_count // page_size + 1


def steady_target(state: WorldState, batch: int) -> int:
    """The cap: the new tasks' window (two pages at most), then the lookups' batches."""
    return 2 + math.ceil(state.unfinished / batch)


def scrape_rows(kind: str, scrapes: Sequence[Scrape], floor: float | None) -> list[list[str]]:
    """Table rows of a series of scrapes: one line per scrape."""
    rows = []
    for number, s in enumerate(scrapes, 1):
        ratio = f"{s.cpu / floor:.2f}x" if floor else "-"
        rows.append([
            f"{kind} {number}", str(s.world.step), str(s.world.unfinished), str(s.requests),
            s.sync, fine_ms(s.cpu), ratio, f"{s.wall:.3f} s", "yes" if s.agrees else "NO",
        ])  # fmt: skip
    return rows


SCRAPE_HEADER: Final = (
    "scrape", "step", "unfinished", "requests", "sync", "CPU", "vs json.loads", "wall",
    "figures = world",
)  # fmt: skip


def figures_cpu(run: Run) -> None:
    """Figures 1, 2 and 3: one world, a steady exporter and a full-sync exporter."""
    plan = run.plan
    world = plan.cpu
    page_size = world.workload.page_size
    with simulator(world) as api:
        bodies = page_bodies(api.url, page_size)
        floors = [json_loads_floor(bodies)]

        with exporter(api.url, page_size) as running:
            first = scrape(running, api.state())  # the first collection: a full sync
            scrape(running, api.step())  # warm-up: the first steady one's first-use costs
            steady = [scrape(running, api.step()) for _ in range(plan.steady_scrapes)]

        with exporter(api.url, page_size, resync_seconds=0) as running:
            scrape(running, api.step())  # warm-up: lazy imports and first-use costs
            full = [scrape(running, api.step()) for _ in range(plan.full_scrapes)]

        # Not a target: what a scrape costs with no collection at all (a cached answer's
        # exposition and HTTP), the part of a steady scrape that incremental fetching leaves.
        with exporter(api.url, page_size, cache_seconds=3600) as running:
            state = api.state()
            scrape(running, state)
            cached = [scrape(running, state) for _ in range(plan.full_scrapes)]

        floors.append(json_loads_floor(page_bodies(api.url, page_size)))
    floor = min(floors)
    size = sum(map(len, bodies))

    table(
        f"Baseline: json.loads of the window's {len(bodies)} pages of {page_size}, "
        f"{size / 1e6:.1f} MB of JSON ({world.workload.label}), fastest of {BASELINE_RUNS} "
        "runs in a fresh process",
        ["when", "CPU"],
        [["before the exporters", fine_ms(floors[0])], ["after them", fine_ms(floors[1])],
         ["the floor: the lower", fine_ms(floor)]],
    )  # fmt: skip
    table(
        f"Scrapes: {world.label}; the steady exporter (RESYNC_SECONDS default) then one with "
        "RESYNC_SECONDS=0",
        SCRAPE_HEADER,
        [
            *scrape_rows("first (full sync)", [first], floor),
            *scrape_rows("steady", steady, floor),
            *scrape_rows("full sync", full, floor),
            *scrape_rows("cached (info)", cached, floor),
        ],
    )
    cached_cpu = statistics.median(s.cpu for s in cached)
    print(
        f"\ncached (info): CACHE_SECONDS=3600, no API call; median {fine_ms(cached_cpu)}"
        f" ({cached_cpu / floor:.2f}x): the exposition and HTTP alone, what no collection saves"
    )
    print()

    # 1. Requests: every steady scrape within its cap, against what a full fetch takes.
    full_requests = statistics.median(s.requests for s in full)
    expected_full = expected_full_requests(first.world, page_size)
    over = [s for s in steady if s.requests > steady_target(s.world, plan.lookup_batch)]
    most = max(steady, key=lambda s: s.requests)
    cap = steady_target(most.world, plan.lookup_batch)
    run.verdict(
        "1. requests of a steady scrape",
        f"{most.requests} at most over {len(steady)} (median "
        f"{statistics.median(s.requests for s in steady):g}), full fetch {full_requests:g} "
        f"(expected {expected_full})",
        f"{most.requests / full_requests:.2f}x the full fetch",
        f"<= 2 + ceil({most.world.unfinished} unfinished / {plan.lookup_batch}) = {cap}"
        " on every one",
        not over,
    )
    reported = [s for s in (*steady, *full) if sum(s.reported.values()) != s.requests]
    synced = all(s.sync == "incremental" for s in steady) and all(s.sync == "full" for s in full)
    run.verdict(
        "1. ucdn_prefetch_collection_api_requests",
        "absent" if not first.reported else f"{len(reported)} scrapes disagree",
        "sync labels right" if synced else "sync labels wrong",
        "= the counter's difference, sync incremental / full",
        bool(first.reported) and not reported and synced,
    )

    # 2. and 3. CPU: the median scrape of each kind against the floor.
    steady_cpu = statistics.median(s.cpu for s in steady)
    full_cpu = statistics.median(s.cpu for s in full)
    run.verdict(
        "2. CPU of a steady scrape",
        f"{fine_ms(steady_cpu)} median of {len(steady)} (mean "
        f"{fine_ms(statistics.mean(s.cpu for s in steady))}), json.loads {fine_ms(floor)}",
        f"{steady_cpu / floor:.3f}x",
        f"<= {plan.steady_cpu_target}x",
        steady_cpu <= plan.steady_cpu_target * floor,
    )
    run.verdict(
        "3. CPU of a full sync",
        f"{fine_ms(full_cpu)} median of {len(full)} (mean "
        f"{fine_ms(statistics.mean(s.cpu for s in full))}), json.loads {fine_ms(floor)}",
        f"{full_cpu / floor:.2f}x",
        f"<= {plan.full_cpu_target}x",
        full_cpu <= plan.full_cpu_target * floor,
    )
    print(
        f"first (info): the first full sync, with nothing known yet, {fine_ms(first.cpu)} "
        f"({first.cpu / floor:.2f}x): every task decoded and summed"
    )
    wrong = [s for s in (first, *steady, *full) if not s.agrees]
    run.verdict(
        "figures agree with the world",
        f"{len(wrong)} of {2 + len(steady) + len(full)} scrapes differ",
        "tasks and URLs by status",
        "none differs",
        not wrong,
    )
    run.figures["cpu"] = {
        "json_loads_floor_seconds": floor,
        "json_loads_runs_seconds": floors,
        "first": asdict(first),
        "steady": [asdict(s) for s in steady],
        "full": [asdict(s) for s in full],
        "cached": [asdict(s) for s in cached],
    }


def figure_memory(run: Run) -> None:
    """Figure 4: peak RSS after a full sync and a few steady scrapes of the big world."""
    plan = run.plan
    world = plan.memory
    with simulator(world) as api, exporter(api.url, world.workload.page_size) as running:
        scrapes = [scrape(running, api.state())]
        scrapes += [scrape(running, api.step()) for _ in range(plan.memory_steady_scrapes)]
        peak = running.peak_rss_mb()
    table(
        f"Memory: {world.label}",
        SCRAPE_HEADER,
        [*scrape_rows("first (full sync)", scrapes[:1], None),
         *scrape_rows("steady", scrapes[1:], None)],
    )  # fmt: skip
    print()
    run.verdict(
        f"4. peak RSS (VmHWM) at {world.workload.urls:,} URLs",
        f"{peak:.0f} MB after a full sync and {plan.memory_steady_scrapes} steady scrapes",
        f"{peak / plan.rss_target_mb:.2f}x the target",
        f"< {plan.rss_target_mb:.0f} MB",
        peak < plan.rss_target_mb,
    )
    wrong = [s for s in scrapes if not s.agrees]
    run.verdict(
        f"4. figures agree with the world at {world.workload.urls:,} URLs",
        f"{len(wrong)} of {len(scrapes)} scrapes differ",
        "tasks and URLs by status",
        "none differs",
        not wrong,
    )
    run.figures["memory"] = {"peak_rss_mb": peak, "scrapes": [asdict(s) for s in scrapes]}


def print_summary(run: Run, elapsed: float) -> None:
    """The final table."""
    summary(
        run.verdicts,
        script="bench_incremental.py",
        quick=run.plan.quick,
        elapsed=elapsed,
        ratios=True,
    )


def write_json(run: Run, path: Path, elapsed: float) -> None:
    """The verdicts and the raw figures, for a machine."""
    document: Mapping[str, object] = {
        "quick": run.plan.quick,
        "elapsed_seconds": elapsed,
        "verdicts": [asdict(v) for v in run.verdicts],
        "figures": run.figures,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every figure; exit 0 when every target is met (always 0 with --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny workloads, seconds")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    run = Run(QUICK if args.quick else FULL)
    started = time.monotonic()
    figures_cpu(run)
    figure_memory(run)
    elapsed = time.monotonic() - started
    print_summary(run, elapsed)
    if args.json is not None:
        write_json(run, args.json, elapsed)
    return 0 if args.quick or all(v.passed for v in run.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
