"""A simulated gateway that answers ``GetProjectList`` from a list the test changes.

The simulator, signatures checked, with tasks for each of :data:`PROJECTS` on the CDN
platform; ``GetProjectList`` answers :attr:`ProjectsApi.projects`, or RetCode 299 while
the action is among ``refused_actions``.
"""

from typing import Any

from simfaults import SimulatedApi

from exporter.gateway.answers import PROJECTS_ACTION
from exporter.simulator.api import auth_problem
from exporter.simulator.protocol import RET_IAM_DENIED, error_payload
from exporter.simulator.static import StaticDataset, generate_tasks

# The projects that have tasks, whether the project list names them or not.
PROJECTS = ("org-alpha", "org-beta", "org-gamma", "org-shared", "web")


class ProjectsApi(SimulatedApi):
    """The simulator, answering ``GetProjectList`` with :attr:`projects` (ID -> name)."""

    def __init__(
        self,
        public_key: str,
        private_key: str,
        projects: dict[str, str],
        *,
        now: int,
        dataset: StaticDataset | None = None,
    ) -> None:
        dataset = dataset or StaticDataset(
            {(pid, False): generate_tasks(3, 1, now=now, seed=len(pid)) for pid in PROJECTS}
        )
        super().__init__(public_key, private_key, dataset, clock=lambda: now)
        self.projects = dict(projects)

    def add_project(self, project_id: str, name: str = "") -> None:
        self.projects[project_id] = name

    def remove_project(self, project_id: str) -> None:
        del self.projects[project_id]

    def answer(self, params: Any) -> dict[str, Any]:
        if params.get("Action") != PROJECTS_ACTION:
            return super().answer(params)
        problem = auth_problem(params, self.public_key, self._private_key)
        if problem is not None:
            return problem
        if PROJECTS_ACTION in self.refused_actions:
            return error_payload(RET_IAM_DENIED, "Permission denied by IAM", PROJECTS_ACTION)
        project_set = [
            {"ProjectId": pid, "ProjectName": name, "IsDefault": False, "MemberCount": 1}
            for pid, name in self.projects.items()
        ]
        return {
            "Action": PROJECTS_ACTION + "Response",
            "RetCode": 0,
            "ProjectCount": len(project_set),
            "ProjectSet": project_set,
        }
