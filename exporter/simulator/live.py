"""The demo's moving world: reproducible tasks whose state is a function of seed and time."""

import random
import string
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from exporter.simulator.protocol import DAY_SECONDS, Target, Task

# slot k+1's. Every number below is a rate or a bound of that simulated world.
TASK_SLOT_SECONDS = 60
TASK_OFFSET_RANGE = (15, 45)
MAX_URLS_PER_TASK = 20
STUCK_TASK_RATE = 0.03  # tasks with URLs that take many hours
STUCK_SECONDS = (6 * 3600, 30 * 3600)
LONG_TAIL_RATE = 0.08
USUAL_SECONDS = (10, 1800)
LONG_TAIL_SECONDS = (1800, 4 * 3600)
MEAN_WAIT_SECONDS = 20
MAX_WAIT_SECONDS = 600
# Failures cluster, as when an origin is down: 12% of tasks, 40% of their URLs, ~5% overall.
FAILING_TASK_RATE = 0.12
URL_FAILURE_RATE_IN_FAILING_TASK = 0.4
# Anomalies the provider's own sample shows, at low rates.
UNKNOW_STATUS_RATE = 0.005
RANDOM_STATUS_RATE = 0.003
FINISH_BEFORE_CREATE_RATE = 0.005
PROGRESS_OVER_100_RATE = 0.005


@dataclass(frozen=True, slots=True)
class _UrlPlan:
    """One URL's whole life, fixed when its task is created; rendering picks a moment."""

    url: str
    wait: int  # seconds from task creation until the transfer starts
    duration: int  # seconds the transfer takes, until success or failure
    final_progress: int  # 100 on success, where it stopped on failure
    status_override: str | None  # "unknow" or a random string instead of the real status
    finish_skew: int  # when > 0, FinishTime is this many seconds before CreateTime
    progress_overshoot: int  # added to Progress 100 on success


@dataclass(frozen=True, slots=True)
class _TaskPlan:
    task_id: str
    create_time: int
    urls: tuple[_UrlPlan, ...]
    status_override: str | None


def _log_uniform(rng: random.Random, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(low * (high / low) ** rng.random())


def _odd_status(rng: random.Random, rate_unknow: float, rate_random: float) -> str | None:
    draw = rng.random()
    if draw < rate_unknow:
        return "unknow"
    if draw < rate_unknow + rate_random:
        return "".join(rng.choices(string.ascii_letters, k=8))
    return None


def _plan_url(rng: random.Random, url: str, *, stuck: bool, failing: bool) -> _UrlPlan:
    if stuck:
        duration = rng.randint(*STUCK_SECONDS)
    elif rng.random() < LONG_TAIL_RATE:
        duration = _log_uniform(rng, LONG_TAIL_SECONDS)
    else:
        duration = _log_uniform(rng, USUAL_SECONDS)
    fails = failing and rng.random() < URL_FAILURE_RATE_IN_FAILING_TASK
    return _UrlPlan(
        url=url,
        wait=min(int(rng.expovariate(1 / MEAN_WAIT_SECONDS)), MAX_WAIT_SECONDS),
        duration=duration,
        final_progress=rng.randint(0, 99) if fails else 100,
        status_override=_odd_status(rng, UNKNOW_STATUS_RATE, RANDOM_STATUS_RATE),
        finish_skew=rng.randint(1, 3600) if rng.random() < FINISH_BEFORE_CREATE_RATE else 0,
        progress_overshoot=rng.randint(1, 50) if rng.random() < PROGRESS_OVER_100_RATE else 0,
    )


@lru_cache(maxsize=16384)
def _plan_task(seed: int, target: Target, slot: int) -> _TaskPlan:
    # A string seed is hashed with SHA-512: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"{seed}/{target[0]}/{target[1]}/{slot}")
    create_time = slot * TASK_SLOT_SECONDS + rng.randrange(*TASK_OFFSET_RANGE)
    version = f"v{rng.randint(1, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 40)}"
    stuck = rng.random() < STUCK_TASK_RATE
    failing = rng.random() < FAILING_TASK_RATE
    urls = tuple(
        _plan_url(
            rng,
            f"https://cdn.example.com/releases/{version}/file-{index}.bin",
            stuck=stuck and (index == 1 or rng.random() < 0.5),
            failing=failing,
        )
        for index in range(1, rng.randint(1, MAX_URLS_PER_TASK) + 1)
    )
    return _TaskPlan(
        # The slot in hex makes the id unique; the fixed-width suffix makes it look like one.
        task_id=f"pf{slot:x}{rng.getrandbits(24):06x}",
        create_time=create_time,
        urls=urls,
        status_override=_odd_status(rng, UNKNOW_STATUS_RATE, RANDOM_STATUS_RATE),
    )


def _render_url(plan: _UrlPlan, create_time: int, now: int) -> tuple[str, dict[str, Any]]:
    """Return the URL's true phase at ``now`` and its UrlProgressInfo as the API shows it."""
    start = create_time + plan.wait
    finish = start + plan.duration
    finish_time = 0
    if now < start:
        phase, progress = "wait", 0
    elif now < finish:
        phase = "process"
        progress = min(99, plan.final_progress * (now - start) // plan.duration)
    else:
        phase = "success" if plan.final_progress == 100 else "failure"
        progress = plan.final_progress + (plan.progress_overshoot if phase == "success" else 0)
        finish_time = create_time - plan.finish_skew if plan.finish_skew else finish
    info = {
        "Url": plan.url,
        "CreateTime": create_time,
        "FinishTime": finish_time,
        "Status": plan.status_override or phase,
        "Progress": progress,
    }
    return phase, info


def _task_status(url_phases: Sequence[str]) -> str:
    """Derive a task's status from its URLs' statuses (the real ones, not anomalies)."""
    if all(phase == "wait" for phase in url_phases):
        return "wait"
    if any(phase in ("wait", "process") for phase in url_phases):
        return "process"
    return "failure" if "failure" in url_phases else "success"


def _render_task(plan: _TaskPlan, now: int) -> Task:
    rendered = [_render_url(url, plan.create_time, now) for url in plan.urls]
    return {
        "TaskId": plan.task_id,
        "CreateTime": plan.create_time,
        "Status": plan.status_override or _task_status([phase for phase, _ in rendered]),
        "UrlLists": [info for _, info in rendered],
    }


class LiveDataset:
    """The demo's moving world: reproducible, its state a pure function of (seed, target, time).

    Every target asked about gets its own tasks: one every 30-90 s, each with 1-20 URLs
    that wait, transfer (Progress rising to 99) and succeed or fail (about 5%), most
    within 10 s to 30 min, a long tail within hours, and about 3% of tasks stuck for
    6-30 h. Tasks exist from ``history`` seconds before now, so the demo starts with a
    full day. A few URLs and tasks carry the provider's anomalies: status ``unknow`` or
    a random string, FinishTime before CreateTime, Progress over 100.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        history: int = DAY_SECONDS,
    ) -> None:
        self.seed = seed
        self._clock = clock
        self._history = history
        # The pages of one scrape ask for the same window within the same second:
        # keep each target's last rendering rather than render a day per page.
        self._lock = threading.Lock()
        self._last: dict[Target, tuple[tuple[int, int, int], list[Task]]] = {}

    def tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's tasks created in ``[begin, end]`` as they are now, newest first.

        The task dicts may be shared with other callers: read them, don't change them.
        """
        now = int(self._clock())
        key = (now, max(begin, now - self._history), min(end, now))
        with self._lock:
            last = self._last.get(target)
        if last is not None and last[0] == key:
            return last[1]
        rendered = self._render(target, *key)
        with self._lock:
            self._last[target] = (key, rendered)
        return rendered

    def _render(self, target: Target, now: int, begin: int, end: int) -> list[Task]:
        plans = (
            _plan_task(self.seed, target, slot)
            for slot in range(end // TASK_SLOT_SECONDS, begin // TASK_SLOT_SECONDS - 1, -1)
        )
        return [_render_task(plan, now) for plan in plans if begin <= plan.create_time <= end]
