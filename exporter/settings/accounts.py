"""The accounts the exporter collects: each one's keys, API URL, projects and platforms.

One account comes from the top-level settings (named ``default``) unless an accounts file
(YAML, read with ``safe_load``) lists several:

```yaml
- name: shop
  profile: shop                # keys (and base_url) of a UCloud profile
  projects: auto
  project_filter: ^prod-
  platforms: [cdn, dcdn]
- name: media
  public_key_file: media.pub   # relative to the accounts file
  private_key_file: media.key
  api_url: https://api.ucloud.cn/
  projects: [org-a, org-b]
```
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.settings.address import http_url_problem
from exporter.settings.names import ConfigError, setting_error, warn
from exporter.settings.secret_files import (
    MAX_KEY_FILE_BYTES,
    UnreadableFileError,
    read_small_text,
    warn_if_others_can_read,
)
from exporter.settings.target import DEFAULT_PROJECT_LABEL, Platform
from exporter.settings.ucloud_profiles import ProfileFiles

DEFAULT_ACCOUNT = "default"
DEFAULT_API_URL = "https://api.an-link.com/"
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


_CDN_ONLY: list[Platform] = ["cdn"]


class _Entry(BaseModel):
    """One account as the accounts file writes it; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, strict=False)

    name: str = Field(min_length=1)
    profile: str | None = None
    public_key_file: Path | None = None
    private_key_file: Path | None = None
    public_key_env: str | None = None
    private_key_env: str | None = None
    public_key: str | None = None
    private_key: SecretStr | None = None
    api_url: str | None = None
    projects: list[str] | Literal["auto"] = Field(default_factory=list)
    project_filter: str = ""
    platforms: list[Platform] = Field(default_factory=_CDN_ONLY.copy, min_length=1)

    @model_validator(mode="after")
    def _one_way_to_the_keys(self) -> "_Entry":
        ways = {
            "profile": (self.profile,),
            "public_key_file": (self.public_key_file, self.private_key_file),
            "public_key_env": (self.public_key_env, self.private_key_env),
            "public_key": (self.public_key, self.private_key),
        }
        given = [way for way, values in ways.items() if any(v is not None for v in values)]
        if len(given) > 1:
            raise _entry_error(given[1], f"the keys come from one of {', '.join(ways)}, not two")
        for way in given:
            if any(value is None for value in ways[way]):
                names = "profile" if way == "profile" else f"{way} and private_{way[7:]}"
                raise _entry_error(way, f"give both {names}")
        if self.projects != DISCOVER and self.project_filter:
            raise _entry_error("project_filter", f"needs projects '{DISCOVER}'")
        if isinstance(self.projects, list) and DISCOVER in self.projects:
            raise _entry_error("projects", f"'{DISCOVER}' is written alone, not in a list")
        return self


def _entry_error(field: str, problem: str) -> PydanticCustomError:
    return PydanticCustomError("account_field", "{problem}", {"field": field, "problem": problem})


_ENTRIES = TypeAdapter(list[_Entry])
_KEY_NAME = re.compile(r"[a-z_]{1,32}")
# A file of a few hundred accounts is a few tens of kilobytes.
MAX_ACCOUNTS_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AccountsFile:
    """An accounts file and what it needs to resolve its accounts' keys.

    Keys come from a UCloud profile (of the shared files the environment names), from two
    key files (a relative path is relative to the accounts file), from two variables, or
    written inline (accepted with a warning: the file may be committed). Each problem
    stops start-up with one line naming the file, the account and the field, never a value.

    Two accounts that list the same project on a platform both collect are refused here;
    with ``projects: auto`` a clash can only be known once the projects are discovered, so
    the collection side refuses it then.
    """

    path: Path
    environ: Mapping[str, str]
    demo: bool = False

    def load(self) -> tuple[AccountSettings, ...]:
        """Every account of the file, validated, in the file's order."""
        try:
            text = read_small_text(self.path, MAX_ACCOUNTS_FILE_BYTES)
        except UnreadableFileError as problem:
            raise setting_error("accounts_file", str(problem)) from None
        if text is None:
            raise setting_error("accounts_file", "does not exist")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            # The position, never the problem's snippet: it may hold a key.
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise self._error(f"not YAML{where}") from None
        if not isinstance(data, list) or not data:
            raise self._error("must be a YAML list of accounts")
        try:
            entries = _ENTRIES.validate_python(data)
        except ValidationError as error:
            raise self._error(self._describe(error, data)) from None
        accounts = tuple(self._account(entry) for entry in entries)
        _refuse_duplicates(accounts, self._error)
        return accounts

    def _error(self, problem: str) -> ConfigError:
        return ConfigError(f"invalid accounts file {self.path}: {problem}")

    @staticmethod
    def _describe(error: ValidationError, data: list[Any]) -> str:
        first = error.errors(include_input=False, include_url=False)[0]
        location = [str(part) for part in first["loc"]]
        if first["type"] == "account_field":
            location.append(first.get("ctx", {})["field"])
        index = int(location[0]) if location and location[0].isdigit() else None
        raw = data[index] if index is not None and index < len(data) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        account = f"account '{name}'" if isinstance(name, str) else f"account {index}"
        field = location[1] if len(location) > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
            # A misplaced key may be the private key itself: only a name like ours is shown.
            if not _KEY_NAME.fullmatch(field):
                field, message = "", "an unknown key"
        return f"{account} {field}: {message}" if field else f"{account}: {message}"

    def _account(self, entry: _Entry) -> AccountSettings:
        where = f"account '{entry.name}'"
        public, private, base_url = self._keys(entry)
        api_url = entry.api_url or base_url or DEFAULT_API_URL
        problem = http_url_problem(api_url)
        if problem:
            source = "api_url" if entry.api_url else "the profile's base_url"
            raise self._error(f"{where} {source}: {problem}")
        if not self.demo:
            for field, value in (("public_key", public), ("private_key", private)):
                if not value:
                    raise self._error(f"{where} {field}: required (or run with --demo)")
        try:
            pattern = compile_filter(entry.project_filter)
        except ValueError as error:
            raise self._error(f"{where} project_filter: {error}") from None
        projects = None if entry.projects == DISCOVER else tuple(dict.fromkeys(entry.projects))
        return AccountSettings(
            name=entry.name,
            public_key=public,
            private_key=SecretStr(private),
            api_url=api_url,
            project_ids=(projects or ("",)) if projects is not None else None,
            project_filter=pattern,
            platforms=tuple(dict.fromkeys(entry.platforms)),
        )

    def _keys(self, entry: _Entry) -> tuple[str, str, str | None]:
        """The account's public and private key and its profile's base URL, if any."""
        where = f"account '{entry.name}'"
        if entry.profile is not None:
            try:
                profile = ProfileFiles.from_environment(self.environ).load(entry.profile)
            except ConfigError as error:
                raise self._error(f"{where} profile: {error}") from None
            # A named profile is never None (it raises instead).
            values = profile.values if profile else {}
            return (
                values.get("public_key", ""),
                values.get("private_key", ""),
                values.get("api_url"),
            )
        if entry.public_key_file is not None and entry.private_key_file is not None:
            return self._file(entry, "public_key_file"), self._file(entry, "private_key_file"), None
        if entry.public_key_env is not None and entry.private_key_env is not None:
            return (
                self._variable(entry, "public_key_env"),
                self._variable(entry, "private_key_env"),
                None,
            )
        if entry.private_key is not None:
            warn(
                "accounts file holds a private key inline; prefer private_key_file, "
                "private_key_env or a profile",
                account=entry.name,
                file=str(self.path),
            )
            warn_if_others_can_read(self.path, "accounts file with a private key")
            return entry.public_key or "", entry.private_key.get_secret_value(), None
        return "", "", None

    def _file(self, entry: _Entry, field: str) -> str:
        path = self.path.parent / getattr(entry, field)
        try:
            text = read_small_text(path, MAX_KEY_FILE_BYTES)
        except UnreadableFileError as problem:
            raise self._error(f"account '{entry.name}' {field}: {path}: {problem}") from None
        if text is None:
            raise self._error(f"account '{entry.name}' {field}: {path} does not exist")
        warn_if_others_can_read(path, "key file")
        return text.strip()

    def _variable(self, entry: _Entry, field: str) -> str:
        name = getattr(entry, field)
        value = self.environ.get(name, "")
        if not value and not self.demo:
            raise self._error(f"account '{entry.name}' {field}: variable {name} is not set")
        return value


def _refuse_duplicates(
    accounts: tuple[AccountSettings, ...], error: Callable[[str], ConfigError]
) -> None:
    """Two accounts of one name, or two that list the same project on one platform."""
    names: set[str] = set()
    publishers: dict[tuple[str, str], str] = {}
    for account in accounts:
        if account.name in names:
            raise error(f"account '{account.name}' name: two accounts have this name")
        names.add(account.name)
        for project in account.project_ids or ():
            for platform in account.platforms:
                other = publishers.setdefault((project, platform), account.name)
                if other != account.name:
                    label = project or DEFAULT_PROJECT_LABEL
                    raise error(
                        f"accounts {other} and {account.name} both publish project {label} "
                        f"on {platform}"
                    )
