"""Building static worlds for the simulator, and reading them back with code of our own.

A test builds its world with :class:`exporter.simulator.StaticDataset` (prefetch and
refresh tasks per target, domains per project, quotas and prefetch switches per domain)
from the pieces here, then checks the exporter against figures computed here, by code
that shares nothing with the exporter's.
"""

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from exporter.simulator.protocol import Domain, Task


def url_progress(
    url: str, status: str, created: int, *, finish: int = 0, progress: int | None = None
) -> dict[str, Any]:
    """One URL of a task as the API writes it; Progress 100 on success unless given."""
    return {
        "Url": url,
        "CreateTime": created,
        "FinishTime": finish,
        "Status": status,
        "Progress": (100 if status == "success" else 0) if progress is None else progress,
    }


def refresh_task(
    task_id: str, created: int, urls: Sequence[dict[str, Any]], *, kind: str = "file"
) -> Task:
    """A refresh task (``Type`` ``file`` or ``dir``) whose status follows its URLs'."""
    statuses = {url["Status"] for url in urls}
    if statuses <= {"wait"}:
        status = "wait"
    elif statuses & {"wait", "process"}:
        status = "process"
    else:
        status = "failure" if "failure" in statuses else "success"
    return {
        "TaskId": task_id,
        "CreateTime": created,
        "Status": status,
        "Type": kind,
        "UrlLists": list(urls),
    }


def domains(project_id: str, *names: str) -> list[Domain]:
    """The project's domains in the order given, with ids unique across projects."""
    label = project_id or "default"
    return [Domain(name, f"ucdn-{label}-{index}") for index, name in enumerate(names, 1)]


def url_domain(url: str) -> str:
    """The domain a URL belongs to: its host, lower-cased, without a port."""
    return (urlsplit(url).hostname or "").lower()


def failure_ratio_by_domain(tasks: Iterable[Task]) -> dict[str, float]:
    """Each domain's share of failed URLs among its finished ones, over ``tasks``."""
    finished: dict[str, int] = {}
    failed: dict[str, int] = {}
    for task in tasks:
        for url in task.get("UrlLists") or []:
            if url.get("Status") in ("success", "failure"):
                domain = url_domain(url["Url"])
                finished[domain] = finished.get(domain, 0) + 1
                failed[domain] = failed.get(domain, 0) + (url["Status"] == "failure")
    return {domain: failed[domain] / count for domain, count in finished.items()}
