"""What the benchmark scripts share: processes on loopback, verdicts and Markdown tables."""

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass


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
