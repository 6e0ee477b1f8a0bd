"""A world of tasks that a test changes between collections, served by the simulated API.

The tasks are the API's own dicts; :class:`World` answers the simulator's :class:`Dataset`
questions from them as they are at that moment, so that a collection and a full fetch
made one after the other see the same world. :class:`GrowingWorld` is one that grows by
thousands of finished tasks at a time, for tests of memory.
"""

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from conftest import url_entry

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.paging import TaskWindow
from exporter.simulator.protocol import PrefetchOnlyDataset, Target, Task

SHOP: Target = ("shop", False)


class World(PrefetchOnlyDataset):
    """The prefetch tasks of one target, newest first; ``repeat`` pages show one task twice."""

    def __init__(self, tasks: Sequence[Task] = ()) -> None:
        self.tasks_by_id: dict[str, Task] = {}
        self.anonymous: list[Task] = []
        self.repeat = False
        for task in tasks:
            self.put(task)

    def put(self, task: Task) -> None:
        """Add ``task``, or replace the task of the same TaskId."""
        task_id = task.get("TaskId")
        if task_id:
            self.tasks_by_id[task_id] = task
        else:
            self.anonymous.append(task)

    def tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """The target's tasks created in ``[begin, end]``, newest first, then by TaskId."""
        if target != SHOP:
            return []
        chosen = [
            task
            for task in [*self.tasks_by_id.values(), *self.anonymous]
            if begin <= task.get("CreateTime", 0) <= end
        ]
        chosen.sort(key=lambda task: (-task.get("CreateTime", 0), task.get("TaskId", "")))
        if self.repeat and chosen:
            # A task listed again further on, as when the set changes between two pages.
            chosen.insert(len(chosen) // 2 + 1, chosen[0])
        return chosen


class GrowingWorld(PrefetchOnlyDataset):
    """The default project's CDN prefetch tasks, newest first, grown in bulk by finished ones."""

    def __init__(self) -> None:
        self._order: list[Task] = []  # newest first
        self._keys: list[int] = []  # -CreateTime of each, ascending, for bisect
        self._serial = 0

    def __len__(self) -> int:
        return len(self._order)

    def grow(self, count: int, created: int) -> None:
        """Add ``count`` tasks created at ``created``, each with one URL, finished at once."""
        fresh = []
        for _ in range(count):
            self._serial += 1
            url = url_entry(f"https://a.example/{self._serial}", "success", created, created, 100)
            fresh.append(task(f"g{self._serial:07d}", created, "success", [url]))
        self._order = fresh + self._order
        self._keys = [-created] * count + self._keys

    def shrink(self, kept: int) -> None:
        """Keep the ``kept`` newest tasks only."""
        self._order, self._keys = self._order[:kept], self._keys[:kept]

    def tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """The tasks created in ``[begin, end]``, newest first."""
        if target != ("", False):
            return []
        order, keys = self._order, self._keys
        return order[bisect.bisect_left(keys, -end) : bisect.bisect_right(keys, -begin)]


def task(
    task_id: str | None, created: int, status: str, urls: list[dict[str, Any]]
) -> dict[str, Any]:
    """A TaskInfo as the API writes it; without ``task_id`` it has no TaskId at all."""
    answer: dict[str, Any] = {"CreateTime": created, "Status": status, "UrlLists": urls}
    if task_id is not None:
        answer["TaskId"] = task_id
    return answer


def fetch_window(
    client: ApiClient, end: int, lookback: int, known: Mapping[int, str] | None = None
) -> TaskWindow:
    """The shop's prefetch tasks of the ``lookback`` seconds up to ``end``, fetched whole
    (``known`` as for :meth:`ApiClient.fetch_tasks`)."""
    return client.fetch_tasks(
        SHOP[0],
        is_dcdn=SHOP[1],
        begin=end - lookback,
        end=end,
        deadline=Deadline.after(10),
        action=PREFETCH_ACTION,
        known=known,
    )
