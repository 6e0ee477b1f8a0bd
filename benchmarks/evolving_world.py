"""A world of prefetch tasks that moves one deterministic step at a time, served as a process.

:class:`EvolvingDataset` is a :class:`~exporter.simulator.Dataset` for one target (the
default project on CDN): ``tasks`` tasks of ``urls_per_task`` URLs (on ``hosts`` hosts,
task by task in turn) created over the last day (an hour's margin, so that none leaves a
day's window during a run), a share of them unfinished (``wait`` or ``process``), the rest
``success`` or ``failure`` with every URL finished. TaskIds are unique and tasks are served
newest first. Each :meth:`step` adds ``new_tasks`` tasks (every URL ``wait``) created at
that moment and finishes ``finished_urls`` URLs, the oldest unfinished task's first, as a
queue would; a task whose URLs have all finished becomes ``success`` (``failure`` when one
of them failed). A world that grows adds ``new_finished_tasks`` more each step, already
finished (every URL ``success``), as an account whose tasks complete between two scrapes;
with ``refresh_too`` the same tasks are listed as refresh tasks as well. Which tasks are
unfinished, and how each URL ends, comes from a random generator seeded once: two runs
with the same settings see the same world step after step, only the timestamps differ.
Tasks and URLs are replaced, never changed in place, so that an answer being written while
a step runs is never torn.

Run as a script, it serves the world with :class:`~exporter.simulator.SimulatedApi` in
its own process (so that its CPU is never counted as the exporter's), prints the base URL
as its first line, and then takes commands on stdin, one per line, answering each with one
JSON line on stdout (see :class:`WorldState`):

* ``step``: advance the world one step, then answer its state;
* ``state``: answer its state as it is;
* ``shrink``: keep the ``tasks`` newest tasks only, then answer its state.

End of input, SIGTERM or SIGINT stop it. The API's actions are untouched: the benchmark
moves the world through this pipe, never through the gateway.

    python benchmarks/evolving_world.py --tasks 2000 --urls-per-task 50
"""

import argparse
import bisect
import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Final

from exporter.simulator.protocol import (
    DAY_SECONDS,
    DEMO_PRIVATE_KEY,
    DEMO_PUBLIC_KEY,
    PrefetchOnlyDataset,
    Target,
    Task,
)
from exporter.simulator.server import SimulatedApi

TARGET: Final[Target] = ("", False)  # the default project, on CDN
STATUSES: Final = ("success", "wait", "process", "failure", "unknown")  # as the exporter reports
# A task fails when one of its URLs does: about a tenth of the tasks, in either case.
FAILED_TASK_SHARE: Final = 0.1  # of the tasks finished before the run
FAILED_URL_SHARE: Final = 0.1  # of those failed tasks' URLs
FAILING_URL_SHARE: Final = 0.002  # of the URLs that finish in a step


@dataclass(frozen=True)
class Shape:
    """How big the world starts and how much of it moves in each step."""

    tasks: int
    urls_per_task: int
    unfinished_share: float = 0.03
    new_tasks: int = 3
    finished_urls: int = 40
    new_finished_tasks: int = 0
    refresh_too: bool = False  # refresh tasks are the same tasks: both kinds' stores grow
    hosts: int = 8  # the tasks' URLs are on this many hosts, task by task in turn
    seed: int = 0


@dataclass(frozen=True)
class WorldState:
    """What the world holds after ``step`` steps, in the exporter's own terms.

    ``tasks`` and ``urls`` count by status as the exporter's ``ucdn_prefetch_tasks`` and
    ``ucdn_prefetch_urls`` do (``unknown`` for the API's ``unknow``); ``unfinished`` is how
    many tasks are in neither ``success`` nor ``failure`` or still have a URL in neither.
    """

    step: int
    task_count: int
    unfinished: int
    tasks: dict[str, int]
    urls: dict[str, int]


def _url(task_index: int, position: int, hosts: int) -> str:
    domain = f"cdn{task_index % hosts}.example.com"
    return f"https://{domain}/releases/v{task_index // 100}.{task_index % 100}/file-{position}.bin"


def _finished_url(
    rng: random.Random, url: str, create_time: int, finish_time: int, failing: float
) -> Task:
    status = "failure" if rng.random() < failing else "success"
    return {
        "Url": url,
        "CreateTime": create_time,
        "FinishTime": finish_time,
        "Status": status,
        "Progress": 100 if status == "success" else int(rng.random() * 100),
    }


def _waiting_url(url: str, create_time: int) -> Task:
    return {"Url": url, "CreateTime": create_time, "FinishTime": 0, "Status": "wait", "Progress": 0}


def _is_finished(task: Task) -> bool:
    return task["Status"] in ("success", "failure") and all(
        url["Status"] in ("success", "failure") for url in task["UrlLists"]
    )


class EvolvingDataset(PrefetchOnlyDataset):
    """One target's tasks, moved on by :meth:`step`; no domains, so no quota is ever asked."""

    def __init__(self, shape: Shape, *, now: int) -> None:
        self._shape = shape
        self._rng = random.Random(shape.seed)
        self._lock = threading.Lock()
        self._step = 0
        self._serial = 0  # tasks made so far: each gets the next index, hence a unique TaskId
        tasks = [self._initial_task(now) for _ in range(shape.tasks)]
        unfinished = self._rng.sample(
            range(len(tasks)), round(shape.tasks * shape.unfinished_share)
        )
        for index in sorted(unfinished):
            tasks[index] = self._unfinished(tasks[index])
        self._order: list[Task] = []  # newest first, then by TaskId
        self._keys: list[int] = []  # -CreateTime of _order, ascending, for bisect
        self._reorder(tasks)

    # The Dataset protocol.

    def tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """The tasks created in ``[begin, end]``, newest first."""
        if target != TARGET:
            return []
        with self._lock:
            order, keys = self._order, self._keys
        return order[bisect.bisect_left(keys, -end) : bisect.bisect_right(keys, -begin)]

    def refresh_tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """The same tasks as :meth:`tasks` when the shape says so, else none."""
        return self.tasks(target, begin, end) if self._shape.refresh_too else []

    # Moving on.

    def step(self, now: int) -> WorldState:
        """Add the new tasks, created at ``now``, and finish the next URLs at ``now``."""
        shape = self._shape
        with self._lock:
            tasks = list(self._order)
        # Never older than the newest task: newest first stays true however the clock goes.
        created = max([now, *(task["CreateTime"] for task in tasks[:1])])
        fresh = [self._new_task(created) for _ in range(shape.new_tasks)]
        fresh += [self._finished_task(created) for _ in range(shape.new_finished_tasks)]
        # Oldest first: the queue drains in the order the tasks came.
        waiting = sorted(
            (index for index, task in enumerate(tasks) if not _is_finished(task)),
            key=lambda index: (tasks[index]["CreateTime"], tasks[index]["TaskId"]),
        )
        left = shape.finished_urls
        for index in waiting:
            if left <= 0:
                break
            tasks[index], done = self._finish_urls(tasks[index], left, max(now, created))
            left -= done
        self._reorder(fresh + tasks)
        self._step += 1
        return self.state()

    def shrink(self) -> WorldState:
        """Drop every task but the ``tasks`` newest: the world as small as it began."""
        with self._lock:
            kept = self._order[: self._shape.tasks]
        self._reorder(list(kept))
        return self.state()

    def state(self) -> WorldState:
        """The world's figures now (the window is every task: all are younger than a day)."""
        with self._lock:
            order, step = self._order, self._step
        task_counts: Counter[str] = Counter(dict.fromkeys(STATUSES, 0))
        url_counts: Counter[str] = Counter(dict.fromkeys(STATUSES, 0))
        unfinished = 0
        for task in order:
            task_counts[_reported(task["Status"])] += 1
            url_counts.update(_reported(url["Status"]) for url in task["UrlLists"])
            unfinished += not _is_finished(task)
        return WorldState(step, len(order), unfinished, dict(task_counts), dict(url_counts))

    def _reorder(self, tasks: list[Task]) -> None:
        tasks.sort(key=lambda task: (-task["CreateTime"], task["TaskId"]))
        keys = [-task["CreateTime"] for task in tasks]
        with self._lock:
            self._order, self._keys = tasks, keys

    def _next_index(self) -> int:
        self._serial += 1
        return self._serial - 1

    def _initial_task(self, now: int) -> Task:
        rng = self._rng
        index = self._next_index()
        create_time = now - int(rng.random() * (DAY_SECONDS - 3600))
        failed = rng.random() < FAILED_TASK_SHARE
        urls = [
            _finished_url(
                rng,
                _url(index, position, self._shape.hosts),
                create_time,
                min(now, create_time + int(10 * 180 ** rng.random())),  # 10 s .. 30 min
                FAILED_URL_SHARE if failed else 0.0,
            )
            for position in range(self._shape.urls_per_task)
        ]
        if failed:
            urls[0] = {**urls[0], "Status": "failure", "Progress": 0}
        status = "failure" if any(url["Status"] == "failure" for url in urls) else "success"
        return {
            "TaskId": f"w{self._shape.seed}-{index:07d}",
            "CreateTime": create_time,
            "Status": status,
            "UrlLists": urls,
        }

    def _unfinished(self, task: Task) -> Task:
        """The task as it was while it ran: some URLs done, one in progress, the rest waiting."""
        rng = self._rng
        urls: list[Task] = task["UrlLists"]
        done = int(rng.random() * len(urls))
        create_time = task["CreateTime"]
        rest = [_waiting_url(url["Url"], create_time) for url in urls[done:]]
        if done and rest:
            rest[0] = {**rest[0], "Status": "process", "Progress": int(rng.random() * 100)}
        return {**task, "Status": "process" if done else "wait", "UrlLists": urls[:done] + rest}

    def _new_task(self, created: int) -> Task:
        index = self._next_index()
        return {
            "TaskId": f"w{self._shape.seed}-{index:07d}",
            "CreateTime": created,
            "Status": "wait",
            "UrlLists": [
                _waiting_url(_url(index, position, self._shape.hosts), created)
                for position in range(self._shape.urls_per_task)
            ],
        }

    def _finished_task(self, created: int) -> Task:
        index = self._next_index()
        return {
            "TaskId": f"w{self._shape.seed}-{index:07d}",
            "CreateTime": created,
            "Status": "success",
            "UrlLists": [
                _finished_url(
                    self._rng, _url(index, position, self._shape.hosts), created, created, 0.0
                )
                for position in range(self._shape.urls_per_task)
            ],
        }

    def _finish_urls(self, task: Task, most: int, now: int) -> tuple[Task, int]:
        """A copy of ``task`` with up to ``most`` more URLs finished; and how many were."""
        urls = list(task["UrlLists"])
        done = 0
        for position, url in enumerate(urls):
            if done >= most:
                break
            if url["Status"] not in ("success", "failure"):
                urls[position] = _finished_url(
                    self._rng, url["Url"], url["CreateTime"], now, FAILING_URL_SHARE
                )
                done += 1
        if all(url["Status"] in ("success", "failure") for url in urls):
            status = "failure" if any(url["Status"] == "failure" for url in urls) else "success"
        else:
            status = "process"
            following = next(
                (p for p, url in enumerate(urls) if url["Status"] not in ("success", "failure")),
                None,
            )
            if following is not None and urls[following]["Status"] == "wait":
                urls[following] = {**urls[following], "Status": "process", "Progress": 50}
        return {**task, "Status": status, "UrlLists": urls}, done


def _reported(status: str) -> str:
    return status if status in STATUSES else "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, required=True, metavar="N")
    parser.add_argument("--urls-per-task", type=int, required=True, metavar="M")
    parser.add_argument("--unfinished-share", type=float, default=0.03, metavar="F")
    parser.add_argument("--new-tasks", type=int, default=3, metavar="K", help="per step")
    parser.add_argument("--finished-urls", type=int, default=40, metavar="K", help="per step")
    parser.add_argument(
        "--new-finished-tasks", type=int, default=0, metavar="K", help="per step, finished"
    )
    parser.add_argument(
        "--refresh-too", action="store_true", help="serve the tasks as refresh tasks too"
    )
    parser.add_argument("--hosts", type=int, default=8, metavar="H", help="distinct hosts")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the world and obey stdin until it ends, or until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    shape = Shape(
        args.tasks,
        args.urls_per_task,
        args.unfinished_share,
        args.new_tasks,
        args.finished_urls,
        args.new_finished_tasks,
        args.refresh_too,
        args.hosts,
        args.seed,
    )
    dataset = EvolvingDataset(shape, now=int(time.time()))

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset) as api:
        print(api.url, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "step":
                state = dataset.step(int(time.time()))
            elif command == "state":
                state = dataset.state()
            elif command == "shrink":
                state = dataset.shrink()
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
                continue
            print(json.dumps(asdict(state)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
