"""The simulated account: its projects, which one is the default, and what a ProjectId names.

An account is either *declared* or *open*. A declared account holds the projects it was
given (one of them the default) and nothing else: a task or domain call naming any other
project is refused as the gateway refuses an unknown project. An open account, the one a
simulator gets when no projects are given, lists a single default project yet serves
whatever project a request names, as the simulator always has, so that a test may key its
world by any project ID without declaring it. Both kinds answer an empty ProjectId with the
default project, as the API documents, and both refuse a project removed while they run.

The dataset knows a project by a *key*: its ID, except for the default project of an open
account, which datasets key by ``""`` (the empty ProjectId that means it).
"""

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_PROJECT_ID = "org-default"
# When the projects of a numbered account were made: fixed, so that every run answers alike.
PROJECT_EPOCH = 1_600_000_000


@dataclass(frozen=True)
class Project:
    """One project of the account, as ``GetProjectList`` lists it."""

    project_id: str
    name: str = ""
    is_default: bool = False
    create_time: int = PROJECT_EPOCH
    member_count: int = 1

    def as_answer(self) -> dict[str, Any]:
        """The ``ProjectSet`` entry."""
        return {
            "ProjectId": self.project_id,
            "ProjectName": self.name,
            "IsDefault": self.is_default,
            "CreateTime": self.create_time,
            "MemberCount": self.member_count,
        }


def numbered_projects(count: int) -> list[Project]:
    """``count`` projects ``org-0001``, ``org-0002`` ...; the first is the default."""
    if count < 1:
        raise ValueError(f"an account has at least one project, not {count}")
    width = max(4, len(str(count)))
    return [
        Project(
            project_id=f"org-{number:0{width}d}",
            name=f"Project {number:0{width}d}",
            is_default=number == 1,
            create_time=PROJECT_EPOCH + number * 3600,
            member_count=1 + number % 7,
        )
        for number in range(1, count + 1)
    ]


class Account:
    """The account's projects, changed while the simulator runs; thread-safe.

    ``projects`` None makes an open account (see the module); otherwise the account holds
    exactly those, the one marked ``is_default`` (else the first) being the default.
    """

    def __init__(self, projects: Iterable[Project] | None = None) -> None:
        self._lock = threading.Lock()
        self._removed: set[str] = set()
        self._open = projects is None
        listed = [Project(DEFAULT_PROJECT_ID, "Default", is_default=True)]
        if projects is not None:
            listed = _with_one_default(list(projects))
        self._projects = {project.project_id: project for project in listed}
        if len(self._projects) < len(listed):
            raise ValueError("a project ID is listed twice")
        self._default_id = next(project.project_id for project in listed if project.is_default)
        self._default_key = "" if self._open else self._default_id

    @property
    def is_open(self) -> bool:
        """Whether a project the account does not list is served all the same."""
        return self._open

    @property
    def default_key(self) -> str:
        """How the dataset knows the default project."""
        return self._default_key

    def projects(self) -> list[Project]:
        """The account's projects, in the order they were declared or added."""
        with self._lock:
            return list(self._projects.values())

    def add(self, project_id: str, name: str = "", *, create_time: int = PROJECT_EPOCH) -> None:
        """Add a project; ValueError for an empty ID or one the account has."""
        if not project_id:
            raise ValueError("a project needs an ID")
        with self._lock:
            if project_id in self._projects:
                raise ValueError(f"the account has project {project_id!r} already")
            self._projects[project_id] = Project(project_id, name, create_time=create_time)
            self._removed.discard(project_id)

    def remove(self, project_id: str) -> None:
        """Remove a project: from now on a call naming it is refused as for an unknown one.

        KeyError when the account has no such project; ValueError for the default
        project, which an account cannot lose.
        """
        with self._lock:
            if project_id not in self._projects:
                raise KeyError(project_id)
            if project_id == self._default_id:
                raise ValueError("the default project cannot be removed")
            del self._projects[project_id]
            self._removed.add(project_id)

    def key_of(self, project_id: str) -> str | None:
        """The dataset's key of the project a request names, None when there is no such project."""
        with self._lock:
            if project_id in ("", self._default_id):
                return self._default_key
            if project_id in self._projects:
                return project_id
            if self._open and project_id not in self._removed:
                return project_id
            return None

    def keys(self, asked: str) -> list[str]:
        """The dataset's keys of every project of the account, in list order.

        ``asked`` is the key of the project the request named: an open account serves a
        project it does not list, so it counts that one among its own, last.
        """
        with self._lock:
            keys = [
                self._default_key if project_id == self._default_id else project_id
                for project_id in self._projects
            ]
        return keys if asked in keys else [*keys, asked]


def _with_one_default(projects: list[Project]) -> list[Project]:
    if not projects:
        raise ValueError("an account has at least its default project")
    defaults = sum(project.is_default for project in projects)
    if defaults > 1:
        raise ValueError("an account has one default project, not several")
    if defaults == 0:
        projects[0] = replace(projects[0], is_default=True)
    return projects
