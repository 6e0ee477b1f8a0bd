"""Compare the CPU of a steady scrape between two versions of the exporter, in turns.

A shared machine's speed drifts (the same code read 7.3 ms a steady scrape at one moment
and 10.8 ms an hour later), so two versions timed one after the other compare the
moments as much as the code. Here both run against the same evolving world
(``evolving_world.py``), in rounds, each round starting one exporter from each checkout
in turn (the order alternates) and timing ``--scrapes`` steady scrapes of each, CPU to
the nanosecond (``benchkit.CpuReading``). The world moves on by a step per scrape, so its
backlog of unfinished URLs grows over the rounds: the absolute figures are of a heavier
world than bench_incremental.py's, the ratio is the comparison.

    python benchmarks/ab_steady.py HEAD~3                  # HEAD~3 (A) against this tree (B)
    python benchmarks/ab_steady.py v0.1.0 --against HEAD   # two revisions
    python benchmarks/ab_steady.py HEAD --quick            # a few seconds: the smoke test

A revision is checked out in a temporary git worktree, removed at the end.
"""

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench_incremental import FULL, QUICK, Simulator, api_requests, exporter, simulator
from bench_scrape import ROOT
from benchkit import CpuReading, cpu_between, table

SETTLE = 0.05  # seconds between the request counter's read and the timed scrape


@contextlib.contextmanager
def checkout(revision: str | None) -> Iterator[Path]:
    """This tree (None), or ``revision`` in a temporary worktree."""
    if revision is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="ab-steady-") as parent:
        path = Path(parent) / "tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(path), revision], check=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "remove", "--force", str(path)], check=True)


def steady_scrapes(api: Simulator, tree: Path, scrapes: int) -> list[float]:
    """CPU seconds of ``scrapes`` steady scrapes of an exporter run from ``tree``, the world
    moved on a step before each."""
    cpu: list[float] = []
    with exporter(api.url, api.world.workload.page_size, checkout=tree) as running:
        running.scrape()  # the first collection: a full sync
        api.step()
        running.scrape()  # warm-up: the first steady one's first-use costs
        for _ in range(scrapes):
            api.step()
            api_requests(running)  # the request counter, so that nothing else runs below
            time.sleep(SETTLE)
            before = CpuReading.of(running.process.pid)
            running.scrape()
            cpu.append(cpu_between(before, CpuReading.of(running.process.pid)))
    return cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the revision to compare against (A)")
    parser.add_argument("--against", help="the revision compared (B); this tree by default")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of one run each (4)")
    parser.add_argument("--scrapes", type=int, default=15, help="steady scrapes a run (15)")
    parser.add_argument("--quick", action="store_true", help="a tiny world, 2 rounds of 2")
    args = parser.parse_args(argv)
    world = QUICK.cpu if args.quick else FULL.cpu
    rounds, scrapes = (2, 2) if args.quick else (args.rounds, args.scrapes)
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    per_round: list[list[str]] = []
    with checkout(args.base) as tree_a, checkout(args.against) as tree_b, simulator(world) as api:
        trees = {"A": tree_a, "B": tree_b}
        for number in range(rounds):
            order = ("A", "B") if number % 2 == 0 else ("B", "A")
            medians = {}
            for name in order:
                run = steady_scrapes(api, trees[name], scrapes)
                cpu[name].extend(run)
                medians[name] = statistics.median(run)
            per_round.append([
                str(number + 1), " then ".join(order), f"{medians['A'] * 1000:.2f} ms",
                f"{medians['B'] * 1000:.2f} ms", f"{medians['B'] / medians['A']:.3f}",
            ])  # fmt: skip
    label = f"{args.base} (A) against {args.against or 'this tree'} (B), {world.label}"
    table(
        f"Steady scrapes in turns: {label}",
        ["round", "order", "A median", "B median", "B / A"],
        per_round,
    )
    a, b = statistics.median(cpu["A"]), statistics.median(cpu["B"])
    print(
        f"\nA: {a * 1000:.2f} ms median of {len(cpu['A'])}; B: {b * 1000:.2f} ms median of "
        f"{len(cpu['B'])}; B / A = {b / a:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
