"""The accounts the exporter collects: each one's keys, API URL, projects and platforms.

One account comes from the top-level settings (named ``default``) unless an accounts file
lists several.
"""

import re
from dataclasses import dataclass

from pydantic import SecretStr

from exporter.settings.target import Platform

DEFAULT_ACCOUNT = "default"
# The project list that asks for every project the account lists (GetProjectList).
DISCOVER = "auto"


@dataclass(frozen=True)
class AccountSettings:
    """One account: its keys, its gateway and what of it is collected."""

    name: str  # "default" for the account of the top-level settings
    public_key: str
    private_key: SecretStr
    api_url: str
    project_ids: tuple[str, ...] | None  # None: discover them ("auto"); "" is the default project
    project_filter: re.Pattern[str] | None  # on the project's ID or name; None: all
    platforms: tuple[Platform, ...]


def compile_filter(pattern: str) -> re.Pattern[str] | None:
    """The compiled project filter, None when empty; ValueError says why it does not compile."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        # error.msg and the position, not str(error): the setting's own text stays out.
        where = f" at position {error.pos}" if error.pos is not None else ""
        raise ValueError(f"not a regular expression ({error.msg}{where})") from None
