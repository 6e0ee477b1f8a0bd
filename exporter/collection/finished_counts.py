"""The counters of finished work: each task and each URL counts once, when first seen finished.

A collection counts what each task it sees has finished since the task's last sighting;
a task that comes back unchanged adds nothing. The store does not count on its first
collection, whose finished work was done before the exporter looked. A task held finished
that a full sync finds unfinished again (which the API should not do) keeps what it had
finished as counted: finishing again counts only URLs past those, and never the task.
"""

from dataclasses import dataclass, field

from exporter.collection.finished import is_finished
from exporter.gateway.answers import TaskInfo
from exporter.summary.totals import FINISHED_RAW


@dataclass
class FinishedCounts:
    """URLs and tasks first seen finished since the store began, by status."""

    created: float
    urls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_RAW, 0))
    tasks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_RAW, 0))
    # The finished URLs by status of each task that was finished and came back unfinished.
    reopened: dict[str, dict[str, int]] = field(default_factory=dict)

    def copy(self) -> "FinishedCounts":
        """An independent copy, for a collection that may not be committed."""
        return FinishedCounts(self.created, dict(self.urls), dict(self.tasks), dict(self.reopened))

    def reopen(self, task_id: str, finished_urls: dict[str, int]) -> None:
        """A task held finished, with ``finished_urls`` by status, is seen unfinished."""
        self.reopened[task_id] = finished_urls

    def count(self, task: TaskInfo, last: TaskInfo | None) -> None:
        """Count what ``task`` finished since ``last``, its previous sighting (None: none)."""
        if task is last:  # back unchanged: nothing new
            return
        now = _finished_urls(task)
        seen = _finished_urls(last) if last is not None else dict.fromkeys(FINISHED_RAW, 0)
        counted = self.reopened.get(task.task_id or "")
        for status in FINISHED_RAW:
            before = seen[status] if counted is None else max(seen[status], counted[status])
            self.urls[status] += max(0, now[status] - before)
        if is_finished(task) and isinstance(task.status, str):
            if counted is None:
                self.tasks[task.status] += 1
            else:  # finished again: held as a finished task once more
                del self.reopened[task.task_id or ""]


def _finished_urls(task: TaskInfo) -> dict[str, int]:
    statuses = [url.status for url in task.url_lists]
    return {status: statuses.count(status) for status in FINISHED_RAW}
