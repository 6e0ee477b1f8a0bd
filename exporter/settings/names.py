"""How a setting is named to the user: its variable, its flag, one-line errors, and the
warnings found while the settings are read.

Shared by the settings model and its sources, so that every message names a setting the
same way and never echoes its value.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from pydantic import ValidationError

ENV_PREFIX = "UCDN_EXPORTER_"
# The settings UCloud's own tools also read, under their names (lower case, as pydantic
# reports them); our own variable wins over UCloud's.
UCLOUD_VARIABLES = {
    "ucloud_public_key": "public_key",
    "ucloud_private_key": "private_key",
    "ucloud_project_id": "project_ids",
    "ucloud_api_base_url": "api_url",
}


class ConfigError(Exception):
    """A setting is invalid; the message is one line fit for the user, free of secret values."""


def setting_error(field: str, problem: str) -> ConfigError:
    """The one-line error for ``field``: its variable, its flag and the problem."""
    return ConfigError(f"invalid setting {env_name(field)} ({flag_name(field)}): {problem}")


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """The command-line flag that sets ``field``."""
    return "--" + field.replace("_", "-")


def describe_error(error: ValidationError) -> str:
    """One line naming the first invalid setting by its variable and flag, without its value."""
    first = error.errors(include_input=False, include_url=False)[0]
    location = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "invalid_setting":
        location = [first.get("ctx", {})["field"]]
    if not location:  # a whole-model check: its message names the setting itself
        return f"invalid configuration: {message}"
    # The location is the field, or the alias it was read under (UCDN_EXPORTER_X, UCLOUD_X).
    name = location[0].lower()
    field = UCLOUD_VARIABLES.get(name) or name.removeprefix(ENV_PREFIX.lower())
    return str(setting_error(field, message))


@dataclass(frozen=True)
class Notice:
    """A warning found while reading the settings, logged once logging is set up: a message
    and its fields (a file, an account), never a value."""

    message: str
    fields: Mapping[str, str]


# The settings are read before logging is configured (its level and format are settings),
# so the sources collect their warnings here, for load_settings to hand over.
_NOTICES: ContextVar[list[Notice] | None] = ContextVar("settings_notices", default=None)


def warn(message: str, **fields: str) -> None:
    """Record a warning for the settings being read; the same one is recorded once."""
    collected = _NOTICES.get()
    if collected is not None and Notice(message, fields) not in collected:
        collected.append(Notice(message, fields))


@contextmanager
def collecting_notices() -> Iterator[list[Notice]]:
    """The warnings recorded by :func:`warn` inside the block."""
    collected: list[Notice] = []
    token = _NOTICES.set(collected)
    try:
        yield collected
    finally:
        _NOTICES.reset(token)
