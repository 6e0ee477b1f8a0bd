"""How a setting is named to the user: its variable, its flag, and one-line errors.

Shared by the settings model and the secrets source, so that every message names a
setting the same way and never echoes its value.
"""

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
