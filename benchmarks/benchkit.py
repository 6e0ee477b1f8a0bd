"""What the benchmark scripts share: processes on loopback, verdicts and Markdown tables."""

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port free right now."""
    # The exporter binds the port a moment later; on loopback nobody else races for it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: "subprocess.Popen[str] | subprocess.Popen[bytes]") -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class CpuReading:
    """A process' CPU time so far, read two ways from /proc.

    ``ticks``: utime + stime of every thread, ended ones included (``/proc/PID/stat``),
    in clock ticks of 10 ms. ``threads``: each live thread's time on a CPU to the
    nanosecond (the first field of ``/proc/PID/task/TID/schedstat``), or None where the
    kernel keeps no such figures.
    """

    ticks: float
    threads: dict[str, int] | None

    @classmethod
    def of(cls, pid: int) -> "CpuReading":
        """Read ``pid``'s CPU time now."""
        threads: dict[str, int] | None
        try:
            threads = {
                task.name: int((task / "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            }
        except (OSError, ValueError, IndexError):
            threads = None  # no schedstat here, or a thread ended as it was read
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
        return cls((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, threads)


def cpu_between(before: CpuReading, after: CpuReading) -> float:
    """CPU seconds from ``before`` to ``after``: to the nanosecond when every thread read
    before is still there (none took its time with it), else in ticks."""
    if before.threads is None or after.threads is None or before.threads.keys() - after.threads:
        return after.ticks - before.ticks
    spent = sum(ns - before.threads.get(tid, 0) for tid, ns in after.threads.items())
    return spent / 1e9


@dataclass
class Verdict:
    """One row of the final summary; ``ratio`` is left empty by a script without one."""

    figure: str
    measured: str
    target: str
    passed: bool
    ratio: str = ""


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, ready to paste into the docs."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n### {title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def ms(seconds: float) -> str:
    """Whole milliseconds."""
    return f"{seconds * 1000:.0f} ms"


def _result(verdict: Verdict) -> str:
    return "PASS" if verdict.passed else "FAIL"


def summary(
    verdicts: Sequence[Verdict], *, script: str, quick: bool, elapsed: float, ratios: bool
) -> None:
    """The final table of verdicts, and how to reproduce the run."""
    rows = [
        [v.figure, v.measured, *([v.ratio] if ratios else []), v.target, _result(v)]
        for v in verdicts
    ]
    header = ["figure", "measured", *(["ratio"] if ratios else []), "target", "result"]
    note = " (quick: tiny workloads, not the targets' workload)" if quick else ""
    table(f"Summary{note}", header, rows)
    print(
        f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {elapsed:.0f} s in all;"
        f" reproduce: python benchmarks/{script}{' --quick' if quick else ''}"
    )
