"""One account's projects: those its settings list, or those ``GetProjectList`` discovers.

A discovered list is refreshed lazily: the first scrape (or ``/sd`` call) that finds the
discovery interval passed runs it, within that call's own deadline, while any other call
that comes meanwhile goes on with the last list rather than wait. Lazily rather than on a
timer thread, so that an exporter nobody scrapes calls nothing, a discovery's request is
bounded by a deadline like every other request, and a test decides when one is due.

A failed discovery keeps the last good list, logs one warning (with what to check, for a
refusal by IAM) and is counted; the next one is tried an interval later. A discovery
that fails at start leaves the account without projects until one succeeds.
"""

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from exporter.gateway.answers import PROJECTS_ACTION, ProjectInfo
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.retcodes import hint_for
from exporter.settings.target import DEFAULT_PROJECT_LABEL

log = logging.getLogger(__name__)


class ProjectLister(Protocol):
    """The one call discovery makes; :class:`~exporter.gateway.api_client.ApiClient` has it."""

    def list_projects(self, *, deadline: Deadline) -> Sequence[ProjectInfo]:
        """Every project the account's key can see."""
        ...


@dataclass(frozen=True, order=True)
class Project:
    """A project of the account: its ID (empty: the default project) and its name."""

    project_id: str
    name: str = ""

    @property
    def label(self) -> str:
        """The ``project_id`` label value, as the collector writes it."""
        return self.project_id or DEFAULT_PROJECT_LABEL


@dataclass(frozen=True)
class ProjectList:
    """What is known of an account's projects at one moment (times are Unix seconds)."""

    account: str
    mode: Literal["list", "auto"]
    projects: tuple[Project, ...]
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0  # failed discoveries since start


@dataclass
class _Due:
    """When the next discovery may start (monotonic), and whether one runs."""

    next_at: float = -math.inf
    running: threading.Lock = field(default_factory=threading.Lock)


class AccountProjects:
    """The projects of one account: fixed when listed, else discovered now and then.

    ``project_filter`` (searched in each discovered project's ID and name) narrows a
    discovered list; a listed one is taken as it is. ``clock`` is monotonic (when a
    discovery is due), ``wall_clock`` the Unix time reported.
    """

    def __init__(
        self,
        account: str,
        lister: ProjectLister,
        project_ids: Sequence[str] | None,
        *,
        project_filter: re.Pattern[str] | None = None,
        interval: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._lister = lister
        self._filter = project_filter
        self._interval = interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._due = _Due()
        if project_ids is None:
            self._known = ProjectList(account, "auto", ())
        else:
            listed = tuple(Project(pid) for pid in dict.fromkeys(project_ids))
            self._known = ProjectList(account, "list", listed)

    @property
    def account(self) -> str:
        """The account's name."""
        return self._known.account

    def known(self) -> ProjectList:
        """The projects as the last good discovery found them (or as listed); no call."""
        with self._lock:
            return self._known

    def refresh(self, deadline: Deadline) -> ProjectList:
        """:meth:`known`, after a discovery within ``deadline`` if one is due.

        Only one discovery runs at a time: a caller that finds one running gets the last
        good list at once.
        """
        if self._known.mode == "list" or not self._due.running.acquire(blocking=False):
            return self.known()
        try:
            if self._clock() >= self._due.next_at:
                self._due.next_at = self._clock() + self._interval
                self._discover(deadline)
        finally:
            self._due.running.release()
        return self.known()

    def _discover(self, deadline: Deadline) -> None:
        attempt = self._wall_clock()
        try:
            listed = self._lister.list_projects(deadline=deadline)
        except ApiError as error:
            self._failed(attempt, error.reason, error.detail, error.request_id)
            return
        except Exception as error:  # a bug here must cost one discovery, not the scrape
            log.error("project discovery failed unexpectedly", exc_info=error)
            self._failed(attempt, "internal_error", "see the traceback above", None)
            return
        projects = tuple(
            Project(info.project_id, info.project_name) for info in listed if self._wanted(info)
        )
        with self._lock:
            before = {project.project_id for project in self._known.projects}
            self._known = ProjectList(
                self.account,
                "auto",
                projects,
                last_attempt=attempt,
                last_success=self._wall_clock(),
                failures=self._known.failures,
            )
        now = {project.project_id for project in projects}
        fields = {
            "account": self.account,
            "projects": len(projects),
            "added": ",".join(sorted(now - before)),
            "removed": ",".join(sorted(before - now)),
        }
        log.info("projects discovered", extra={"fields": fields})

    def _wanted(self, info: ProjectInfo) -> bool:
        if self._filter is None:
            return True
        return bool(self._filter.search(info.project_id) or self._filter.search(info.project_name))

    def _failed(self, attempt: float, reason: str, detail: str, request_id: str | None) -> None:
        with self._lock:
            known = self._known
            self._known = ProjectList(
                known.account,
                "auto",
                known.projects,
                last_attempt=attempt,
                last_success=known.last_success,
                last_error=f"{reason}: {detail}",
                failures=known.failures + 1,
            )
        fields: dict[str, object] = {
            "account": self.account,
            "reason": reason,
            "detail": detail,
            "projects_kept": len(known.projects),
        }
        if request_id is not None:
            fields["request_id"] = request_id
        if tip := hint_for(detail, PROJECTS_ACTION):  # 299: the sub-account lacks it
            fields["hint"] = tip
        log.warning("project discovery failed", extra={"fields": fields})
