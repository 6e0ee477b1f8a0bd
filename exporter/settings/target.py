"""A collection target: one project of the account on one platform (CDN or DCDN)."""

from dataclasses import dataclass
from typing import Literal

DEFAULT_PROJECT_LABEL = "default"
PLATFORMS = ("cdn", "dcdn")
Platform = Literal["cdn", "dcdn"]


@dataclass(frozen=True, order=True)
class Target:
    """One collection target: a project of the account on one platform."""

    project_id: str
    platform: Platform

    @property
    def project_label(self) -> str:
        """The ``project_id`` label value: the default project has an empty ID."""
        return self.project_id or DEFAULT_PROJECT_LABEL

    @property
    def is_dcdn(self) -> bool:
        """The API's ``IsDcdn`` parameter for this target."""
        return self.platform == "dcdn"
