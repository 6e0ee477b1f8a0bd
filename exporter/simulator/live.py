"""The demo's moving world: reproducible, its state a function of seed, target and time."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.simulator.livedomains import live_domain, live_domains, live_quota
from exporter.simulator.liveplans import (
    REFRESH_SLOT_SECONDS,
    TASK_SLOT_SECONDS,
    TaskPlan,
    plan_refresh,
    plan_task,
    render_task,
)
from exporter.simulator.protocol import DAY_SECONDS, Domain, Quota, Target, Task


@dataclass(frozen=True)
class _Kind:
    """One kind of task: how its plans are made and how far apart they come."""

    name: str
    planner: Callable[[int, Target, int], TaskPlan]
    slot_seconds: int


_PREFETCH = _Kind("prefetch", plan_task, TASK_SLOT_SECONDS)
_REFRESH = _Kind("refresh", plan_refresh, REFRESH_SLOT_SECONDS)
_Window = tuple[int, int, int]  # the moment rendered, then the first and last CreateTime


class LiveDataset:
    """The demo's moving world: reproducible, its state a pure function of (seed, target, time).

    Every target asked about gets its own prefetch tasks: one every 30-90 s, each with
    1-20 URLs that wait, transfer (Progress rising to 99) and succeed or fail, most
    within 10 s to 30 min, a long tail within hours, and about 3% of tasks stuck for
    6-30 h. A few URLs and tasks carry the provider's anomalies: status ``unknow`` or a
    random string, FinishTime before CreateTime, Progress over 100. Refresh tasks (Type
    ``file`` or ``dir``) come every 5 minutes and finish within seconds to minutes, a
    few fail, and one is always still running after more than 10 minutes. Tasks exist
    from ``history`` seconds before now, so the demo starts with a full day.

    Every project has the five domains of :mod:`~exporter.simulator.livedomains`; task
    URLs spread over them, some hosts in capitals or with a port. One domain's URLs fail
    far more often, one is near its prefetch quota, one has prefetch switched off.
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
        self._last: dict[tuple[str, Target], tuple[_Window, list[Task]]] = {}

    def tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's prefetch tasks created in ``[begin, end]`` as they are now.

        Newest first. The task dicts may be shared with other callers: read them, don't
        change them.
        """
        return self._tasks(_PREFETCH, target, begin, end)

    def refresh_tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's refresh tasks created in ``[begin, end]`` as they are now."""
        return self._tasks(_REFRESH, target, begin, end)

    def domains(self, project_id: str) -> tuple[Domain, ...]:
        """Return the project's five domains, in a fixed order."""
        return live_domains(self.seed, project_id)

    def quota(self, project_id: str, domain_id: str) -> Quota | None:
        """Return the domain's quotas and today's use so far, None if there is no such domain."""
        spec = live_domain(self.seed, project_id, domain_id)
        return None if spec is None else live_quota(self.seed, project_id, spec, self._now())

    def prefetch_enabled(self, project_id: str, domain_id: str) -> bool | None:
        """Return whether prefetch is on for the domain, None if there is no such domain."""
        spec = live_domain(self.seed, project_id, domain_id)
        return None if spec is None else spec.prefetch_enabled

    def _now(self) -> int:
        return int(self._clock())

    def _tasks(self, kind: _Kind, target: Target, begin: int, end: int) -> list[Task]:
        now = self._now()
        window = (now, max(begin, now - self._history), min(end, now))
        key = (kind.name, target)
        with self._lock:
            last = self._last.get(key)
        if last is not None and last[0] == window:
            return last[1]
        _, first, last_moment = window
        plans = (
            kind.planner(self.seed, target, slot)
            for slot in range(last_moment // kind.slot_seconds, first // kind.slot_seconds - 1, -1)
        )
        rendered = [
            render_task(plan, now) for plan in plans if first <= plan.create_time <= last_moment
        ]
        with self._lock:
            self._last[key] = (window, rendered)
        return rendered
