"""Measure a scrape's cost against the exporter's targets, every baseline taken in the same run.

The exporter and the simulated API run as separate processes on loopback, so that the
simulator's CPU is never counted as the exporter's. The exporter's CPU is read from /proc
around each HTTP scrape of ``/metrics``: every thread's time on a CPU to the nanosecond
(``/proc/PID/task/TID/schedstat``), or utime + stime in 10 ms ticks (``/proc/PID/stat``)
where that cannot be had (see ``benchkit.CpuReading``). It includes fetching, decoding,
validating, summarising, the exposition and the HTTP serving, that is everything a scrape
costs. The baseline is plain
``json.loads`` of the very page bodies the exporter receives, timed in this process.

Every scrape here is a full sync (``--resync-seconds 0``): the whole window is fetched
every time. The world does not change between scrapes, so after the first one
every task comes back known and is not decoded again; ``bench_incremental.py`` measures
a world that moves, and the first (cold) full sync.

Figures and their targets: 1. CPU of one scrape (a full sync), at most 1.0x json.loads;
2. latency with a 200 ms gateway, parallel paging within 1.2 s (sequential paging for
comparison); 3. peak RSS (under 150 MB at 100k URLs) and exposition size (bounded) at
10k, 100k and 1M URLs; 4. CPU per scrape at 1k, 10k, 100k (and 1M) URLs, linear. A
summary with PASS/FAIL ends it.

    python benchmarks/bench_scrape.py           # the full run, a few minutes on 2 cores
    python benchmarks/bench_scrape.py --quick   # tiny workloads, seconds (the smoke test)
"""

import argparse
import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NotRequired

import requests
from benchkit import CpuReading, Verdict, cpu_between, free_port, ms, stop, summary, table
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from exporter.gateway.answers import decode_response
from exporter.gateway.api_client import ACTION
from exporter.gateway.paging import TaskWindow
from exporter.gateway.signature import ParamValue, signed_form
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.summary.target_summary import SummaryLimits, summarize

ROOT: Final = Path(__file__).resolve().parent.parent
SCRAPE_TIMEOUT: Final = 120.0  # generous: the 1M-URL scrape on a busy shared core
START_TIMEOUT: Final = 60.0
LOOKBACK: Final = 86400
COLLECTION_CAP: Final = 512 * 1024 * 1024  # admits every workload here, the 1M-URL one too
SETTLE: Final = 0.2  # seconds of pause before each timed scrape and json.loads of figure 1


@dataclass(frozen=True)
class Workload:
    """How many tasks of how many URLs the simulator serves, in pages of ``page_size``."""

    tasks: int
    urls_per_task: int
    page_size: int = 100

    @property
    def urls(self) -> int:
        return self.tasks * self.urls_per_task

    @property
    def label(self) -> str:
        return f"{self.tasks:,} tasks x {self.urls_per_task} URLs = {self.urls:,} URLs"


@dataclass(frozen=True)
class Plan:
    """The workloads and repetitions of one run; ``--quick`` shrinks every one of them."""

    cpu: Workload
    scrapes: int
    delay: float
    latency_target: float
    sequential_floor: float
    latency_scrapes: int
    scaling: tuple[Workload, ...]
    exposition: tuple[Workload, ...]
    parallel_pages: int = 8
    cpu_target: float = 1.0
    rss_target_mb: float = 150.0
    quick: bool = False


FULL: Final = Plan(
    cpu=Workload(2000, 50),
    scrapes=15,
    delay=0.2,
    latency_target=1.2,
    sequential_floor=4.0,
    latency_scrapes=3,
    scaling=(Workload(20, 50), Workload(200, 50), Workload(2000, 50), Workload(10000, 100)),
    exposition=(Workload(200, 50), Workload(2000, 50), Workload(10000, 100)),
)
# The same shape in miniature: every figure and every line, in seconds, targets not meant.
QUICK: Final = Plan(
    cpu=Workload(40, 10, page_size=10),
    scrapes=2,
    delay=0.05,
    latency_target=1.2,
    sequential_floor=0.2,
    latency_scrapes=1,
    scaling=(Workload(10, 10, 10), Workload(40, 10, 10), Workload(80, 10, 10)),
    exposition=(Workload(10, 10, 10), Workload(40, 10, 10), Workload(80, 10, 10)),
    quick=True,
)


# ---------------------------------------------------------------------------
# Processes


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


@contextlib.contextmanager
def simulator(workload: Workload, delay: float = 0.0) -> Iterator[str]:
    """The simulated API in its own process, serving ``workload``; yields its base URL."""
    command = _python(
        "-m",
        "exporter.simulator",
        "--listen",
        "127.0.0.1:0",
        "--tasks",
        str(workload.tasks),
        "--urls-per-task",
        str(workload.urls_per_task),
        "--delay",
        str(delay),
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # the simulator prints its URL first
        if not url.startswith("http://"):
            raise RuntimeError(f"simulator did not start: {url!r}")
        yield url
    finally:
        stop(process)


@dataclass
class Exporter:
    """The exporter as a process, scraped over HTTP; its CPU and memory read from /proc."""

    process: subprocess.Popen[bytes]
    url: str
    session: requests.Session = field(default_factory=requests.Session)

    def cpu(self) -> CpuReading:
        """The process' CPU time so far (see :class:`benchkit.CpuReading`)."""
        return CpuReading.of(self.process.pid)

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process ever had."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def scrape(self) -> tuple[bytes, float, float]:
        """One scrape of /metrics: the body, its wall-clock seconds and the exporter's CPU."""
        cpu = self.cpu()
        started = time.perf_counter()
        response = self.session.get(
            self.url + "metrics",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)},
            timeout=SCRAPE_TIMEOUT + 10,
        )
        wall = time.perf_counter() - started
        used = cpu_between(cpu, self.cpu())
        response.raise_for_status()
        if b'ucdn_prefetch_up{platform="cdn",project_id="default"} 1.0' not in response.content:
            raise RuntimeError("the scrape failed: a failed collection is not a measurement")
        return response.content, wall, used


@contextlib.contextmanager
def exporter(api_url: str, page_size: int, parallel_pages: int) -> Iterator[Exporter]:
    """Start the exporter against ``api_url`` for the default project on CDN; wait until ready."""
    port = free_port()
    command = _python(
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
        "--page-size",
        str(page_size),
        "--parallel-pages",
        str(parallel_pages),
        "--max-scrape-timeout-seconds",
        str(SCRAPE_TIMEOUT),
        "--request-timeout-seconds",
        str(SCRAPE_TIMEOUT),
        # The 1M-URL workload is about 145 MB of JSON, past the default 32 MiB cap.
        "--max-collection-bytes",
        str(COLLECTION_CAP),
        "--log-level",
        "warning",
        "--resync-seconds",
        "0",
    )
    with serving(subprocess.Popen(command, cwd=ROOT), port) as running:
        yield running


@contextlib.contextmanager
def serving(process: subprocess.Popen[bytes], port: int) -> Iterator[Exporter]:
    """The exporter ``process`` listening on ``port``, once ready; stopped on leaving."""
    running = Exporter(process, f"http://127.0.0.1:{port}/")
    try:
        wait_ready(running)
        yield running
    finally:
        running.session.close()
        stop(process)


def wait_ready(running: Exporter) -> None:
    """Wait until the exporter answers ``/-/ready``; fail if it exits or takes too long."""
    give_up = time.monotonic() + START_TIMEOUT
    while time.monotonic() < give_up:
        if running.process.poll() is not None:
            raise RuntimeError(f"exporter exited with {running.process.returncode}")
        with contextlib.suppress(requests.ConnectionError):
            if running.session.get(running.url + "-/ready", timeout=5).ok:
                return
        time.sleep(0.05)
    raise RuntimeError("exporter not ready in time")


# ---------------------------------------------------------------------------
# Baselines, timed in this process


def page_bodies(api_url: str, page_size: int) -> list[bytes]:
    """The bodies the exporter receives: the same signed query, page after page until short."""
    end = int(time.time())
    bodies: list[bytes] = []
    with requests.Session() as session:
        for page in range(100_000):  # bounded: a 1M-URL workload is 100 pages
            params: dict[str, ParamValue] = {
                "Action": ACTION,
                "BeginTime": end - LOOKBACK,
                "EndTime": end,
                "IsDcdn": False,
                "Limit": page_size,
                "Offset": page * page_size,
            }
            form = signed_form(params, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
            response = session.post(api_url, data=form, timeout=SCRAPE_TIMEOUT)
            response.raise_for_status()
            bodies.append(response.content)
            if len(json.loads(response.content).get("TaskList") or []) < page_size:
                return bodies
    raise RuntimeError("too many pages")


def cpu_median(work: Callable[[], object], repeats: int) -> float:
    """Median process CPU seconds of ``work()`` (this process runs it on one thread)."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times)


# ---------------------------------------------------------------------------
# Figures


@dataclass
class Run:
    """Figures measured so far, printed as they come and summarised at the end."""

    plan: Plan
    verdicts: list[Verdict] = field(default_factory=list)

    def verdict(self, figure: str, measured: str, target: str, passed: bool) -> None:
        self.verdicts.append(Verdict(figure, measured, target, passed))


def figure_cpu(run: Run) -> float:
    """Figure 1 (and the 100k-URL peak RSS of figure 3): one scrape's CPU vs json.loads."""
    plan = run.plan
    work = plan.cpu
    with simulator(work) as api:
        bodies = page_bodies(api, work.page_size)
        with exporter(api, work.page_size, plan.parallel_pages) as running:
            running.scrape()  # warm-up: lazy imports and first-use costs are not a scrape's

            # Each scrape is compared with json.loads timed just before and just after it,
            # so that the two meet the same load on this shared machine, not minutes apart;
            # each after a pause, so that neither starts among the caches the other churned.
            def baseline() -> float:
                time.sleep(SETTLE)
                return cpu_median(lambda: [json.loads(body) for body in bodies], 1)

            def scrape() -> tuple[bytes, float, float]:
                time.sleep(SETTLE)
                return running.scrape()

            baselines = [baseline()]
            scrapes = []
            for _ in range(plan.scrapes):
                scrapes.append(scrape())
                baselines.append(baseline())
            peak = running.peak_rss_mb()
    around = [(before + after) / 2 for before, after in itertools.pairwise(baselines)]
    loads = statistics.median(around)
    scrape_cpu = statistics.median(cpu for _, _, cpu in scrapes)
    ratio = statistics.median(
        cpu / baseline for (_, _, cpu), baseline in zip(scrapes, around, strict=True)
    )
    parts = in_process_parts(bodies, max(3, plan.scrapes))
    size = sum(map(len, bodies))
    table(
        f"1. CPU of one scrape: {work.label}, {len(bodies)} pages of {work.page_size}, "
        f"{size / 1e6:.1f} MB of JSON (median of {plan.scrapes} scrapes)",
        ["what", "CPU", "vs json.loads"],
        [
            [
                "baseline: json.loads of the same bodies, around each scrape",
                ms(loads),
                "1.00x",
            ],
            ["exporter process, one whole scrape", ms(scrape_cpu), f"{ratio:.2f}x"],
            *parts,
        ],
    )
    run.verdict(
        "1. CPU per scrape vs json.loads", f"{ratio:.2f}x", f"<= {plan.cpu_target}x",
        ratio <= plan.cpu_target,
    )  # fmt: skip
    return peak


class PydanticUrl(TypedDict):
    """The answer model's URL as a pydantic TypedDict: the choice msgspec replaced, compared."""

    Url: NotRequired[str]
    CreateTime: NotRequired[int]
    FinishTime: NotRequired[int]
    Status: NotRequired[str]
    Progress: NotRequired[int]


class PydanticTask(TypedDict):
    """A task for :class:`PydanticUrl`."""

    TaskId: NotRequired[str]
    CreateTime: NotRequired[int]
    Status: NotRequired[str]
    UrlLists: NotRequired[list[PydanticUrl]]


class PydanticAnswer(TypedDict):
    """An answer for :class:`PydanticUrl`."""

    RetCode: int
    TotalCount: NotRequired[int]
    TaskList: NotRequired[list[PydanticTask]]


def in_process_parts(bodies: list[bytes], repeats: int) -> list[list[str]]:
    """Rows for the scrape's main parts, timed here against a json.loads taken alongside."""
    pydantic_adapter = TypeAdapter(PydanticAnswer)
    tasks = [task for body in bodies for task in decode_response(body).task_list]
    window = TaskWindow(tasks, 0, len(tasks), len(bodies), len(tasks))
    baseline = "in-process: json.loads again, the rows' baseline"
    parts: dict[str, Callable[[], object]] = {
        baseline: lambda: [json.loads(body) for body in bodies],
        "  of which: decode and validate (msgspec)": lambda: list(map(decode_response, bodies)),
        "  of which: summarize (by columns)": lambda: summarize(window, SummaryLimits()),
        "  not used, for comparison: pydantic TypeAdapter": lambda: list(
            map(pydantic_adapter.validate_json, bodies)
        ),
    }
    # Round after round rather than part after part, so that a burst of load elsewhere
    # on this shared machine weighs on every part alike.
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, work in parts.items():
            times[name].append(cpu_median(work, 1))
    medians = {name: statistics.median(values) for name, values in times.items()}
    loads = medians[baseline]
    return [[name, ms(cpu), f"{cpu / loads:.2f}x"] for name, cpu in medians.items()]


def figure_latency(run: Run) -> None:
    """Figure 2: wall-clock time of one scrape when every answer takes ``delay`` extra."""
    plan = run.plan
    work = plan.cpu
    rows = []
    results: dict[int, float] = {}
    with simulator(work, delay=plan.delay) as api:
        for parallel in (plan.parallel_pages, 1):
            with exporter(api, work.page_size, parallel) as running:
                running.scrape()  # warm-up
                repeats = plan.latency_scrapes if parallel > 1 else 1
                walls = [running.scrape()[1] for _ in range(repeats)]
            results[parallel] = statistics.median(walls)
    pages = -(-work.tasks // work.page_size)
    parallel_s, sequential_s = results[plan.parallel_pages], results[1]
    rows = [
        [f"pages in flight: {plan.parallel_pages} (default)", f"{parallel_s:.2f} s", "1.00x"],
        ["sequential (--parallel-pages 1)", f"{sequential_s:.2f} s",
         f"{sequential_s / parallel_s:.2f}x"],
    ]  # fmt: skip
    table(
        f"2. Latency: {work.label}, {pages} pages, +{plan.delay * 1000:.0f} ms per answer",
        ["paging", "scrape wall time", "vs parallel"],
        rows,
    )
    run.verdict(
        "2. scrape time, parallel pages", f"{parallel_s:.2f} s", f"< {plan.latency_target} s",
        parallel_s < plan.latency_target,
    )  # fmt: skip
    run.verdict(
        "2. scrape time, sequential baseline", f"{sequential_s:.2f} s",
        f"> {plan.sequential_floor} s", sequential_s > plan.sequential_floor,
    )  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One workload scraped: CPU per scrape, exposition bytes and series, peak RSS."""

    workload: Workload
    cpu: float
    json_loads: float
    exposition_bytes: int
    series: int
    peak_rss_mb: float
    wall: float


def measure(workload: Workload, scrapes: int, parallel_pages: int) -> Sample:
    """Scrape ``workload`` ``scrapes`` times after a warm-up; CPU is the mean scrape's
    (with 10 ms ticks, where nanoseconds cannot be had, the mean resolves the small
    workloads better than a median of single ticks would)."""
    with simulator(workload) as api:
        bodies = page_bodies(api, workload.page_size)
        with exporter(api, workload.page_size, parallel_pages) as running:
            running.scrape()
            results = [running.scrape() for _ in range(scrapes)]
            peak = running.peak_rss_mb()
    body = results[-1][0]
    loads = cpu_median(lambda: [json.loads(page) for page in bodies], max(3, scrapes))
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return Sample(
        workload,
        sum(cpu for _, _, cpu in results) / scrapes,
        loads,
        len(body),
        series,
        peak,
        statistics.median(wall for _, wall, _ in results),
    )


def figure_scaling_and_exposition(run: Run, peak_100k: float) -> None:
    """Figures 3 and 4: one pass over the workloads, each scraped by a fresh exporter."""
    plan = run.plan
    workloads = sorted({*plan.scaling, *plan.exposition}, key=lambda w: w.urls)
    samples: dict[Workload, Sample] = {}
    for workload in workloads:
        # A 1M-URL scrape takes seconds: two of them are enough for its CPU figure.
        scrapes = 2 if workload.urls >= 1_000_000 else max(plan.scrapes, 5)
        samples[workload] = measure(workload, scrapes, plan.parallel_pages)

    exposed = [samples[w] for w in plan.exposition]
    rows = [
        [f"{s.workload.urls:,}", f"{s.exposition_bytes / 1024:.1f} KiB", f"{s.series:,}",
         f"{s.peak_rss_mb:.0f} MB", f"{s.exposition_bytes / exposed[0].exposition_bytes:.2f}x"]
        for s in exposed
    ]  # fmt: skip
    table(
        "3. Memory and exposition size (default caps: 1,000 URL series, 100 task series)",
        ["URLs", "exposition", "samples", "peak RSS", f"vs {exposed[0].workload.urls:,} URLs"],
        rows,
    )
    largest = max(s.exposition_bytes for s in exposed) / min(s.exposition_bytes for s in exposed)
    run.verdict(
        f"3. peak RSS at {plan.cpu.urls:,} URLs", f"{peak_100k:.0f} MB",
        f"< {plan.rss_target_mb:.0f} MB", peak_100k < plan.rss_target_mb,
    )  # fmt: skip
    run.verdict(
        f"3. exposition, {exposed[0].workload.urls:,} -> {exposed[-1].workload.urls:,} URLs",
        f"{largest:.2f}x the smallest", "bounded (<= 1.2x)", largest <= 1.2,
    )  # fmt: skip

    scaled = [samples[w] for w in plan.scaling]
    reference = scaled[-1] if len(scaled) < 4 else scaled[2]  # the 100k workload
    rows = []
    for s in scaled:
        micro = s.cpu / s.workload.urls * 1e6
        rows.append([
            s.workload.label, ms(s.cpu), f"{micro:.2f} us",
            f"{micro / (reference.cpu / reference.workload.urls * 1e6):.2f}x",
            f"{s.cpu / s.json_loads:.2f}x", f"{s.wall:.2f} s",
        ])  # fmt: skip
    table(
        f"4. Scaling: CPU per scrape (per-URL cost vs the {reference.workload.urls:,}-URL run)",
        ["workload", "CPU per scrape", "per URL", "per URL vs ref", "vs json.loads", "wall"],
        rows,
    )
    # Linear: what each URL adds does not grow as the workload grows tenfold. It may fall:
    # below about 10,000 URLs every URL also adds series, until the caps are full.
    marginals = [
        (b.cpu - a.cpu) / (b.workload.urls - a.workload.urls) for a, b in itertools.pairwise(scaled)
    ]
    growth = max(b / a if a > 0 else float("inf") for a, b in itertools.pairwise(marginals))
    run.verdict(
        "4. marginal CPU per URL, step by step",
        " / ".join(f"{m * 1e6:.2f}" for m in marginals) + " us",
        "no step > 1.5x the last", growth <= 1.5,
    )  # fmt: skip


def print_summary(run: Run, elapsed: float) -> None:
    """The final table; the exit status says whether every target was met."""
    summary(
        run.verdicts, script="bench_scrape.py", quick=run.plan.quick, elapsed=elapsed, ratios=False
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every figure; exit 0 when every target is met (always 0 with --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny workloads, seconds")
    args = parser.parse_args(argv)
    run = Run(QUICK if args.quick else FULL)
    started = time.monotonic()
    peak = figure_cpu(run)
    figure_latency(run)
    figure_scaling_and_exposition(run, peak)
    print_summary(run, time.monotonic() - started)
    return 0 if args.quick or all(v.passed for v in run.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
