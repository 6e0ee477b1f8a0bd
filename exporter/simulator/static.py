"""Fixed datasets: tasks given by a test, or generated in bulk for a benchmark or a big account."""

import bisect
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from exporter.simulator.livedomains import live_domain, live_domains, live_quota
from exporter.simulator.protocol import DAY_SECONDS, Domain, Quota, Target, Task

DomainKey = tuple[str, str]
"""``(project_id, domain_id)``."""


def _create_time(task: Task) -> int | None:
    value = task.get("CreateTime")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class _SortedTasks:
    """One target's tasks, sorted once so a window is two bisections, not a sort."""

    dated: list[Task]  # newest first, then by TaskId
    keys: list[int]  # -CreateTime of ``dated``, ascending, for bisect
    undated: list[Task]  # no usable CreateTime: no window can exclude them

    @classmethod
    def of(cls, tasks: Sequence[Task]) -> "_SortedTasks":
        dated = [task for task in tasks if _create_time(task) is not None]
        dated.sort(key=lambda task: (-cast(int, _create_time(task)), str(task.get("TaskId", ""))))
        undated = [task for task in tasks if _create_time(task) is None]
        return cls(dated, [-cast(int, _create_time(task)) for task in dated], undated)

    def window(self, begin: int, end: int) -> list[Task]:
        first = bisect.bisect_left(self.keys, -end)
        last = bisect.bisect_right(self.keys, -begin)
        return self.dated[first:last] + self.undated


class StaticDataset:
    """A fixed world, served as given (anomalies included): what a test knows the answer of.

    ``tasks`` and ``refresh_tasks`` are each target's prefetch and refresh tasks;
    ``domains`` each project's domains, in list order; ``quotas`` a domain's quotas and
    use by ``(project_id, domain_id)`` (a listed domain without one has the documented
    defaults and nothing submitted); ``prefetch_enabled`` the switch by the same key (on
    unless given). Tasks whose CreateTime is not an integer cannot be filtered by time,
    so every window includes them, after the others.
    """

    def __init__(
        self,
        tasks: Mapping[Target, Sequence[Task]],
        *,
        refresh_tasks: Mapping[Target, Sequence[Task]] | None = None,
        domains: Mapping[str, Sequence[Domain]] | None = None,
        quotas: Mapping[DomainKey, Quota] | None = None,
        prefetch_enabled: Mapping[DomainKey, bool] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._targets = {target: _SortedTasks.of(listed) for target, listed in tasks.items()}
        self._refresh = {
            target: _SortedTasks.of(listed) for target, listed in (refresh_tasks or {}).items()
        }
        self._domains = {project: list(listed) for project, listed in (domains or {}).items()}
        self._quotas = dict(quotas or {})
        self._prefetch_enabled = dict(prefetch_enabled or {})

    def set_tasks(self, target: Target, tasks: Sequence[Task]) -> None:
        """Replace one target's tasks, e.g. to change the set while a client pages through it."""
        sorted_tasks = _SortedTasks.of(tasks)
        with self._lock:
            self._targets[target] = sorted_tasks

    def tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's prefetch tasks created in ``[begin, end]``, newest first."""
        with self._lock:
            sorted_tasks = self._targets.get(target)
        return sorted_tasks.window(begin, end) if sorted_tasks else []

    def refresh_tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's refresh tasks created in ``[begin, end]``, newest first."""
        sorted_tasks = self._refresh.get(target)
        return sorted_tasks.window(begin, end) if sorted_tasks else []

    def domains(self, project_id: str) -> list[Domain]:
        """Return the project's domains as given."""
        return self._domains.get(project_id, [])

    def quota(self, project_id: str, domain_id: str) -> Quota | None:
        """Return the domain's quotas as given, the defaults if none were, None if unknown."""
        if not self._has_domain(project_id, domain_id):
            return None
        return self._quotas.get((project_id, domain_id), Quota())

    def prefetch_enabled(self, project_id: str, domain_id: str) -> bool | None:
        """Return the domain's prefetch switch as given (on by default), None if unknown."""
        if not self._has_domain(project_id, domain_id):
            return None
        return self._prefetch_enabled.get((project_id, domain_id), True)

    def _has_domain(self, project_id: str, domain_id: str) -> bool:
        return any(domain.domain_id == domain_id for domain in self.domains(project_id))


# Share of each task status in generate_tasks, cumulative.
_GENERATED_STATUS_MIX = (
    ("success", 0.72),
    ("failure", 0.80),
    ("process", 0.92),
    ("wait", 0.98),
    ("unknow", 1.0),
)


def _generated_url(rng: random.Random, url: str, status: str, create_time: int, now: int) -> Task:
    # Within 10 s .. 30 min, log-uniform: the bulk of real transfers.
    elapsed = int(10 * 180 ** rng.random())
    done = status in ("success", "failure", "unknow")
    progress = {"success": 100, "wait": 0}.get(status, int(rng.random() * 100))
    return {
        "Url": url,
        "CreateTime": create_time,
        "FinishTime": min(now, create_time + elapsed) if done else 0,
        "Status": status,
        "Progress": progress,
    }


def _generated_url_status(rng: random.Random, task_status: str, index: int) -> str:
    if task_status == "failure":
        return "failure" if index == 0 or rng.random() < 0.1 else "success"
    if task_status == "process":
        draw = rng.random()
        return "process" if index == 0 or draw < 0.3 else "wait" if draw < 0.5 else "success"
    return task_status


def generate_tasks(
    count: int,
    urls_per_task: int,
    *,
    now: int,
    seed: int = 0,
    lookback: int = DAY_SECONDS,
) -> list[Task]:
    """Generate ``count`` tasks of ``urls_per_task`` URLs each, created over the lookback window.

    A realistic mix of task statuses (mostly success, some failure, process, wait and
    ``unknow``) with URL statuses that agree with them; TaskIds are unique. Fast enough
    for benchmarks: 2,000 x 50 URLs in well under a second.
    """
    rng = random.Random(seed)
    tasks: list[Task] = []
    for index in range(count):
        create_time = now - int(rng.random() * lookback)
        draw = rng.random()
        status = next(name for name, share in _GENERATED_STATUS_MIX if draw < share)
        prefix = f"https://cdn.example.com/releases/v{index // 100}.{index % 100}.0/file-"
        urls = [
            _generated_url(
                rng,
                f"{prefix}{position}.bin",
                _generated_url_status(rng, status, position),
                create_time,
                now,
            )
            for position in range(urls_per_task)
        ]
        task_id = f"gen{seed}-{index:06d}"
        tasks.append(
            {"TaskId": task_id, "CreateTime": create_time, "Status": status, "UrlLists": urls}
        )
    return tasks


@dataclass(frozen=True)
class _GenerationPlan:
    """What every generated target follows; hashable, so it keys the cache of targets."""

    tasks_per_target: int
    urls_per_task: int
    seed: int
    now: int
    idle_share: float = 0.0


def _is_idle(plan: _GenerationPlan, project_key: str, is_dcdn: bool) -> bool:
    """A share of targets, the same for both kinds, holds only finished work."""
    target_hash = zlib.crc32(f"{plan.seed}/{project_key}/{is_dcdn}".encode())
    return target_hash % 1000 < plan.idle_share * 1000


def _finished(task: Task) -> Task:
    """``task`` as it is once done: it and its unfinished URLs a success."""
    if task["Status"] not in ("process", "wait", "unknow"):
        return task
    create_time = task["CreateTime"]
    urls = [
        url
        if url["Status"] in ("success", "failure")
        else {**url, "Status": "success", "Progress": 100, "FinishTime": create_time + 60}
        for url in task["UrlLists"]
    ]
    return {**task, "Status": "success", "UrlLists": urls}


# Generated targets kept rendered: the pages of one collection ask for the same target
# again and again, while an account of thousands of targets must not be held whole.
_GENERATED_TARGETS_KEPT = 256


@lru_cache(maxsize=_GENERATED_TARGETS_KEPT)
def _generated_target(
    plan: _GenerationPlan, project_key: str, is_dcdn: bool, kind: str
) -> _SortedTasks:
    # crc32 of the target's name: a seed of its own, the same on every run and platform.
    target_seed = zlib.crc32(f"{plan.seed}/{project_key}/{is_dcdn}/{kind}".encode())
    tasks = generate_tasks(
        plan.tasks_per_target,
        plan.urls_per_task,
        now=plan.now,
        seed=target_seed,
        lookback=DAY_SECONDS - 3600,
    )
    if _is_idle(plan, project_key, is_dcdn):
        tasks = [_finished(task) for task in tasks]
    if kind == "refresh":
        tasks = [
            {**task, "Type": "dir" if index % 5 == 0 else "file"}
            for index, task in enumerate(tasks)
        ]
    return _SortedTasks.of(tasks)


class GeneratedDataset:
    """Any number of projects, each target with its own generated tasks: an account at scale.

    Every target (project x platform) has ``tasks_per_target`` prefetch tasks and as many
    refresh tasks, of ``urls_per_task`` URLs each, as :func:`generate_tasks` makes them:
    created over the day before ``now`` less an hour (so that a day's window holds them
    all for an hour), a function of the seed and the target alone. A target's tasks are
    generated when first asked for and only the most recently asked are kept, so that
    2,000 targets of 20 tasks cost what a few hundred do. Every project has the demo
    world's five domains (:mod:`~exporter.simulator.livedomains`), with ids of its own.

    ``idle_share`` of the targets (chosen by a hash of the target) are *idle*: every one
    of their tasks and URLs is finished, so that a planner has nothing under way to follow
    there; the others keep the mix's unfinished tasks.
    """

    def __init__(
        self,
        tasks_per_target: int,
        urls_per_task: int = 10,
        *,
        seed: int = 0,
        now: int,
        idle_share: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tasks_per_target < 0 or urls_per_task < 0:
            raise ValueError("tasks_per_target and urls_per_task must be >= 0")
        if not 0 <= idle_share <= 1:
            raise ValueError("idle_share must be within 0..1")
        self._plan = _GenerationPlan(tasks_per_target, urls_per_task, seed, now, idle_share)
        self._clock = clock

    def is_idle(self, project_key: str, is_dcdn: bool) -> bool:
        """Whether the target holds only finished work (one of the ``idle_share``)."""
        return _is_idle(self._plan, project_key, is_dcdn)

    def tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's prefetch tasks created in ``[begin, end]``, newest first."""
        return _generated_target(self._plan, *target, "prefetch").window(begin, end)

    def refresh_tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's refresh tasks created in ``[begin, end]``, newest first."""
        return _generated_target(self._plan, *target, "refresh").window(begin, end)

    def domains(self, project_id: str) -> tuple[Domain, ...]:
        """Return the project's five domains."""
        return live_domains(self._plan.seed, project_id)

    def quota(self, project_id: str, domain_id: str) -> Quota | None:
        """Return the domain's quotas and today's use, None if there is no such domain."""
        spec = live_domain(self._plan.seed, project_id, domain_id)
        if spec is None:
            return None
        return live_quota(self._plan.seed, project_id, spec, int(self._clock()))

    def prefetch_enabled(self, project_id: str, domain_id: str) -> bool | None:
        """Return whether prefetch is on for the domain, None if there is no such domain."""
        spec = live_domain(self._plan.seed, project_id, domain_id)
        return None if spec is None else spec.prefetch_enabled
