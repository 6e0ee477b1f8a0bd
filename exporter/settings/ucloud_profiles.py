"""UCloud's shared profile files (``~/.ucloud/config.json``, ``~/.ucloud/credential.json``),
read as UCloud's CLI and SDKs read them, and as a settings source.

Both files are JSON arrays of objects joined on ``profile``: the config file gives a
profile's ``project_id`` and ``base_url``, the credential file its ``public_key`` and
``private_key``. The profile is the one ``UCLOUD_PROFILE`` names, else the one marked
``"active": true``, else ``default``. A file that does not exist is no profile, not an
error, unless ``UCLOUD_PROFILE`` (or an account) names a profile that is in neither file.
Every error names the file, the profile and the key, never a value.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from exporter.settings.address import http_url_problem
from exporter.settings.names import ConfigError
from exporter.settings.secret_files import (
    UnreadableFileError,
    read_small_text,
    warn_if_others_can_read,
)

PROFILE_VARIABLE = "UCLOUD_PROFILE"
CONFIG_FILE_VARIABLE = "UCLOUD_SHARED_CONFIG_FILE"
CREDENTIAL_FILE_VARIABLE = "UCLOUD_SHARED_CREDENTIAL_FILE"
DEFAULT_CONFIG_FILE = "~/.ucloud/config.json"
DEFAULT_CREDENTIAL_FILE = "~/.ucloud/credential.json"
DEFAULT_PROFILE = "default"
# `ucloud init` writes a few hundred bytes per profile; a bigger file is a mistake.
MAX_PROFILE_FILE_BYTES = 1024 * 1024
# The settings a profile gives, and the key each is read from, in the config file...
_CONFIG_KEYS = {"project_ids": "project_id", "api_url": "base_url"}
# ...and in the credential file.
_CREDENTIAL_KEYS = {"public_key": "public_key", "private_key": "private_key"}


@dataclass(frozen=True)
class Profile:
    """A UCloud profile: its name and the settings it gives (public_key, private_key,
    project_ids, api_url; only those it has)."""

    name: str
    values: Mapping[str, str]


@dataclass(frozen=True)
class ProfileFiles:
    """Where the shared files are: UCLOUD_SHARED_CONFIG_FILE and
    UCLOUD_SHARED_CREDENTIAL_FILE, else their defaults in the home directory."""

    config: Path
    credential: Path
    # Files named by a variable must be readable when they exist; a default one that
    # cannot even be looked at (a home directory closed to the exporter's user) is none.
    named: frozenset[Path] = frozenset()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "ProfileFiles":
        """The files the variables name, ``~`` expanded."""
        config = environ.get(CONFIG_FILE_VARIABLE) or DEFAULT_CONFIG_FILE
        credential = environ.get(CREDENTIAL_FILE_VARIABLE) or DEFAULT_CREDENTIAL_FILE
        named = [environ.get(name) for name in (CONFIG_FILE_VARIABLE, CREDENTIAL_FILE_VARIABLE)]
        return cls(
            Path(config).expanduser(),
            Path(credential).expanduser(),
            frozenset(Path(path).expanduser() for path in named if path),
        )

    def load(self, named: str | None) -> Profile | None:
        """The profile ``named`` (then it must exist), else the active one, else
        ``default``; None when no file holds the profile chosen that way."""
        configs = self._read(self.config, "config")
        credentials = self._read(self.credential, "credential")
        name = named or _active(configs, self.config) or DEFAULT_PROFILE
        config = _entry(configs, name)
        credential = _entry(credentials, name)
        if config is None and credential is None:
            if named is None:
                return None
            raise ConfigError(
                f"UCloud profile '{name}' is in neither {self.config} nor {self.credential}"
            )
        values = {
            **_strings(config or {}, _CONFIG_KEYS, self.config, name),
            **_strings(credential or {}, _CREDENTIAL_KEYS, self.credential, name),
        }
        problem = http_url_problem(values["api_url"]) if "api_url" in values else None
        if problem:
            raise ConfigError(f"UCloud profile '{name}' in {self.config}: base_url {problem}")
        if credential:
            warn_if_others_can_read(self.credential, "UCloud credential file")
        return Profile(name, values)

    def _read(self, path: Path, kind: str) -> list[dict[str, Any]]:
        if path not in self.named:
            try:
                path.lstat()
            except OSError:
                return []
        return _read_profiles(path, kind)


def _read_profiles(path: Path, kind: str) -> list[dict[str, Any]]:
    """The profiles of one shared file; none when it does not exist."""
    try:
        text = read_small_text(path, MAX_PROFILE_FILE_BYTES)
    except UnreadableFileError as problem:
        raise ConfigError(f"UCloud shared {kind} file {path}: {problem}") from None
    if text is None:
        return []
    try:
        profiles = json.loads(text)
    except json.JSONDecodeError as error:
        # The position, never error.doc or the text around it: it may be a private key.
        where = f"line {error.lineno} column {error.colno}"
        raise ConfigError(f"UCloud shared {kind} file {path}: not JSON ({where})") from None
    if not isinstance(profiles, list) or not all(isinstance(p, dict) for p in profiles):
        raise ConfigError(f"UCloud shared {kind} file {path}: not a JSON array of objects")
    return profiles


def _active(profiles: list[dict[str, Any]], path: Path) -> str | None:
    for profile in profiles:
        if profile.get("active") is True:
            name = profile.get("profile")
            if not isinstance(name, str):
                raise ConfigError(
                    f"UCloud shared config file {path}: an active profile's name is not a string"
                )
            return name
    return None


def _entry(profiles: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((profile for profile in profiles if profile.get("profile") == name), None)


def _strings(
    entry: Mapping[str, Any], keys: Mapping[str, str], path: Path, name: str
) -> dict[str, str]:
    """The settings ``keys`` maps from the entry's keys, each a string; empty means unset."""
    values: dict[str, str] = {}
    for field, key in keys.items():
        value = entry.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ConfigError(f"UCloud profile '{name}' in {path}: {key} is not a string")
        values[field] = value
    return values


class ProfileFilesSource(PydanticBaseSettingsSource):
    """The settings source of the UCloud profile: below the flags and the variables (ours
    and UCloud's), above the secrets directory. ``--demo`` reads no profile: it signs with
    the simulator's keys and calls the simulator."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        """Read the profile files and UCLOUD_PROFILE as ``environ`` gives them."""
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the profile at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The profile's values under their settings' preferred names, each one only when no
        flag or variable set it."""
        if self._demo():
            return {}
        named = self._environ.get(PROFILE_VARIABLE) or None
        profile = ProfileFiles.from_environment(self._environ).load(named)
        if profile is None:
            return {}
        values: dict[str, Any] = {}
        for field, value in profile.values.items():
            names = self._names(field)
            if not any(name in self.current_state for name in names):
                values[names[0]] = value
        return values

    def _names(self, field: str) -> list[str]:
        """Every key a higher source may have set ``field`` under, its preferred one first."""
        alias = self.settings_cls.model_fields[field].validation_alias
        choices = [str(choice) for choice in getattr(alias, "choices", ())]
        return [*choices, field]

    def _demo(self) -> bool:
        value = self.current_state.get("demo", False)
        try:
            return bool(TypeAdapter(bool).validate_python(value))
        except ValidationError:
            return False  # the model says why, naming the setting
