"""The demo world's tasks: each one's whole life planned at creation, rendered at a moment.

A task's plan is a pure function of (seed, target, slot), so the world is reproducible
and a moment's state costs no memory of the past. Prefetch tasks come one a minute;
refresh tasks, which take effect in about a minute, one every five.
"""

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from exporter.simulator.livedomains import LIVE_DOMAINS
from exporter.simulator.protocol import Target, Task

# Prefetches: one per TASK_SLOT_SECONDS slot, created somewhere in the
# middle of its slot, so tasks arrive 30-90 s apart and slot k's task is older than
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
# Failures cluster, as when an origin is down: a share of tasks (the domain's), 40% of their URLs.
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
class TaskPlan:
    task_id: str
    create_time: int
    urls: tuple[_UrlPlan, ...]
    status_override: str | None
    type: str | None = None  # refresh tasks only: "file" or "dir"


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
def plan_task(seed: int, target: Target, slot: int) -> TaskPlan:
    # A string seed is hashed with SHA-512: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"{seed}/{target[0]}/{target[1]}/{slot}")
    create_time = slot * TASK_SLOT_SECONDS + rng.randrange(*TASK_OFFSET_RANGE)
    version = f"v{rng.randint(1, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 40)}"
    domain = rng.choice(LIVE_DOMAINS)
    host = rng.choice(domain.spellings)
    stuck = rng.random() < STUCK_TASK_RATE
    failing = rng.random() < domain.failing_task_rate
    urls = tuple(
        _plan_url(
            rng,
            f"https://{host}/releases/{version}/file-{index}.bin",
            stuck=stuck and (index == 1 or rng.random() < 0.5),
            failing=failing,
        )
        for index in range(1, rng.randint(1, MAX_URLS_PER_TASK) + 1)
    )
    return TaskPlan(
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


def render_task(plan: TaskPlan, now: int) -> Task:
    rendered = [_render_url(url, plan.create_time, now) for url in plan.urls]
    return {
        "TaskId": plan.task_id,
        "CreateTime": plan.create_time,
        "Status": plan.status_override or _task_status([phase for phase, _ in rendered]),
        **({"Type": plan.type} if plan.type else {}),
        "UrlLists": [info for _, info in rendered],
    }


# Refreshes: one per REFRESH_SLOT_SECONDS, 1-5 files or one directory, done in seconds
# to minutes; a few fail, and every STUCK_REFRESH_EVERY-th hangs for hours, longer than
# the gap to the next hanging one, so one is always unfinished after 10 minutes.
REFRESH_SLOT_SECONDS = 300
REFRESH_OFFSET_RANGE = (30, 270)
MAX_URLS_PER_REFRESH = 5
DIR_REFRESH_RATE = 0.15
REFRESH_SECONDS = (5, 240)
MEAN_REFRESH_WAIT_SECONDS = 5
FAILING_REFRESH_RATE = 0.05
URL_FAILURE_RATE_IN_FAILING_REFRESH = 0.5
STUCK_REFRESH_EVERY = 36  # slots: every three hours
STUCK_REFRESH_SECONDS = (12600, 14400)  # 3.5-4 h


def _plan_refresh_url(rng: random.Random, url: str, *, stuck: bool, failing: bool) -> _UrlPlan:
    fails = failing and rng.random() < URL_FAILURE_RATE_IN_FAILING_REFRESH
    duration = rng.randint(*STUCK_REFRESH_SECONDS) if stuck else _log_uniform(rng, REFRESH_SECONDS)
    return _UrlPlan(
        url=url,
        wait=int(rng.expovariate(1 / MEAN_REFRESH_WAIT_SECONDS)),
        duration=duration,
        final_progress=rng.randint(0, 99) if fails else 100,
        status_override=None,
        finish_skew=0,
        progress_overshoot=0,
    )


@lru_cache(maxsize=4096)
def plan_refresh(seed: int, target: Target, slot: int) -> TaskPlan:
    """The refresh task of ``target``'s slot ``slot`` (REFRESH_SLOT_SECONDS long)."""
    rng = random.Random(f"{seed}/{target[0]}/{target[1]}/refresh/{slot}")
    create_time = slot * REFRESH_SLOT_SECONDS + rng.randrange(*REFRESH_OFFSET_RANGE)
    host = rng.choice(rng.choice(LIVE_DOMAINS).spellings)
    stuck = slot % STUCK_REFRESH_EVERY == 0
    failing = not stuck and rng.random() < FAILING_REFRESH_RATE
    if rng.random() < DIR_REFRESH_RATE:
        kind, paths = "dir", [f"/assets/{rng.choice(['css', 'js', 'img', 'fonts'])}/"]
    else:
        kind = "file"
        paths = [
            f"/pages/{rng.getrandbits(16):04x}.html"
            for _ in range(rng.randint(1, MAX_URLS_PER_REFRESH))
        ]
    urls = tuple(
        _plan_refresh_url(rng, f"https://{host}{path}", stuck=stuck and index == 0, failing=failing)
        for index, path in enumerate(paths)
    )
    return TaskPlan(
        # "rf" and the slot in hex: unique, and never a prefetch task's id.
        task_id=f"rf{slot:x}{rng.getrandbits(24):06x}",
        create_time=create_time,
        urls=urls,
        status_override=None,
        type=kind,
    )
