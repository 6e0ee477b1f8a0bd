"""Settings: environment variables, command-line flags and container secrets, validated once.

Every setting is an environment variable ``UCDN_EXPORTER_<NAME>`` and a flag
``--<name-with-dashes>``; the API keys are also read under the names UCloud's own
tools use (``UCLOUD_PUBLIC_KEY``/``UCLOUD_PRIVATE_KEY``) and from files in a secrets
directory (``/run/secrets`` when it exists, or ``UCDN_EXPORTER_SECRETS_DIR``), as files
named like those variables. Precedence: flag, environment, secrets file, default.
:func:`load_settings` turns any invalid value into one :class:`ConfigError` line that
names the setting and never echoes its value.
"""

import errno
import itertools
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from exporter.address import DEFAULT_PORT, parse_listen_address

ENV_PREFIX = "UCDN_EXPORTER_"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
SECRETS_DIR_VARIABLE = ENV_PREFIX + "SECRETS_DIR"
# The settings read from secrets files, and the files' names, in order of preference.
KEY_FILES = {
    "public_key": (ENV_PREFIX + "PUBLIC_KEY", "UCLOUD_PUBLIC_KEY"),
    "private_key": (ENV_PREFIX + "PRIVATE_KEY", "UCLOUD_PRIVATE_KEY"),
}
# An API key is tens of bytes; a bigger file is a mistake, not a key.
MAX_KEY_FILE_BYTES = 64 * 1024
_URL_PROBLEM = "must be an http:// or https:// URL with a valid host and port"
DEFAULT_PROJECT_LABEL = "default"
PLATFORMS = ("cdn", "dcdn")
# 10 s to 4 h: prefetches of small files finish in seconds, large release artefacts in hours.
DEFAULT_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)

Platform = Literal["cdn", "dcdn"]
CommaList = Annotated[list[str], NoDecode]
CommaFloats = Annotated[list[float], NoDecode]


class ConfigError(Exception):
    """A setting is invalid; the message is one line fit for the user, free of secret values."""


def setting_error(field: str, problem: str) -> ConfigError:
    """The one-line error for ``field``: its variable, its flag and the problem."""
    return ConfigError(f"invalid setting {env_name(field)} ({flag_name(field)}): {problem}")


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


def _key_alias(name: str) -> AliasChoices:
    return AliasChoices(ENV_PREFIX + name, "UCLOUD_" + name, name.lower())


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The exporter's configuration; field descriptions are the ``--help`` texts."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        hide_input_in_errors=True,
        extra="ignore",
        populate_by_name=True,
    )

    public_key: str = Field(
        "", validation_alias=_key_alias("PUBLIC_KEY"), description="the account's public API key"
    )
    private_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=_key_alias("PRIVATE_KEY"),
        description="the account's private API key (prefer the environment or a secrets file: "
        "flags show in the process list)",
    )
    api_url: str = Field("https://api.an-link.com/", description="base URL of the UCDN API gateway")
    project_ids: CommaList = Field(
        default_factory=list,
        description="comma-separated project IDs; empty means the account's default project, "
        f"labelled '{DEFAULT_PROJECT_LABEL}'",
    )
    platforms: CommaList = Field(
        default_factory=lambda: ["cdn"], description="comma-separated subset of cdn,dcdn"
    )
    lookback_seconds: int = Field(
        86400, ge=60, le=31 * 86400, description="window of task creation times to report"
    )
    page_size: int = Field(100, ge=1, le=10000, description="tasks asked for per API request")
    max_pages: int = Field(
        1000, ge=1, description="hard cap on pages per target and collection; more is an error"
    )
    parallel_pages: int = Field(8, ge=1, le=64, description="pages fetched at once per target")
    max_url_series: int = Field(
        1000, ge=0, description="per target, most ucdn_prefetch_url_progress_ratio series"
    )
    max_task_series: int = Field(
        100, ge=0, description="per target, most ucdn_prefetch_task_completion_seconds series"
    )
    max_label_value_length: int = Field(
        1024,
        ge=64,
        description="longest url or task_id label value, in UTF-8 bytes; longer ones are cut "
        "to a prefix, '…' and a hash of the whole value",
    )
    histogram_buckets: CommaFloats = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS),
        description="comma-separated bucket bounds in seconds of the URL completion histogram",
    )
    cache_seconds: float = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="reuse an answer for this long; 0 fetches on every scrape",
    )
    request_timeout_seconds: float = Field(
        10,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="timeout of one API request (connect and each read)",
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="retries of a request after a connection error, HTTP 429 or 5xx, or "
        "RetCode 153 (rate limited), 110, 130 or 150",
    )
    max_response_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest API answer accepted, in bytes"
    )
    max_collection_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="most bytes of answers read for one target's collection; more is an error",
    )
    max_api_requests_per_second: float = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="most API requests per second, shared by every target (keeps a fleet "
        "under the gateway's rate limit, RetCode 153); 0 means no limit",
    )
    ca_bundle: Path | None = Field(
        None, description="CA bundle to verify the API's TLS certificate (private gateways)"
    )
    scrape_timeout_offset_seconds: float = Field(
        0.5,
        ge=0,
        allow_inf_nan=False,
        description="subtracted from Prometheus' scrape timeout header",
    )
    max_scrape_timeout_seconds: float = Field(
        30,
        gt=0,
        allow_inf_nan=False,
        description="deadline of a scrape without a timeout header, and cap of one with it",
    )
    listen_address: str = Field(
        f":{DEFAULT_PORT}", description="host:port to serve on; an empty host means all interfaces"
    )
    web_config_file: Path | None = Field(
        None,
        validation_alias=AliasChoices(ENV_PREFIX + "WEB_CONFIG_FILE", "web_config_file"),
        description="exporter-toolkit web configuration file (TLS, basic auth)",
    )
    max_requests: int = Field(
        40,
        ge=0,
        le=1024,
        description="most HTTP requests served at once (up to 1024), 503 past it; 0 means no limit",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level: debug, info, warning (or warn) or error"
    )
    log_format: Literal["logfmt", "json"] = Field(
        "logfmt", description="log line format: logfmt or json"
    )
    demo: bool = Field(
        False, description="serve a built-in simulated API on loopback and need no account"
    )

    @field_validator("project_ids", "platforms", "histogram_buckets", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        # "warn" is the Prometheus ecosystem's spelling (promslog, exporter-toolkit).
        return "warning" if value.lower() == "warn" else value.lower()

    @field_validator("platforms")
    @classmethod
    def _known_platforms(cls, value: list[str]) -> list[str]:
        if set(value) - set(PLATFORMS):
            raise ValueError("unknown platform: choose from cdn, dcdn")
        if not value:
            raise ValueError("at least one platform is needed")
        return list(dict.fromkeys(value))

    @field_validator("project_ids")
    @classmethod
    def _unique_projects(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("histogram_buckets")
    @classmethod
    def _increasing_buckets(cls, value: list[float]) -> list[float]:
        if not value or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("must be a non-empty, strictly increasing list of seconds")
        if value[0] <= 0:
            raise ValueError("bucket bounds must be positive")
        # +Inf is the histogram's own last bucket; NaN would be a bucket no value falls in.
        if not all(math.isfinite(bound) for bound in value):
            raise ValueError("bucket bounds must be finite numbers")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # The messages never quote the URL: its user-info part may hold a password.
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise ValueError(_URL_PROBLEM) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if port == 0:
            raise ValueError(_URL_PROBLEM)
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _readable_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            problem = regular_file_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @model_validator(mode="after")
    def _keys_unless_demo(self) -> "Settings":
        keys = {"public_key": self.public_key, "private_key": self.private_key.get_secret_value()}
        if self.demo:
            # The simulator replaces both; silently dropping them would hide a mistake.
            if "api_url" in self.model_fields_set:
                raise _invalid("api_url", "cannot be combined with --demo")
            for field, value in keys.items():
                if value:
                    raise _invalid(field, "cannot be combined with --demo (set in some source)")
            return self
        for field, value in keys.items():
            if not value:
                raise _invalid(field, "required (or run with --demo)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then our own key files instead of pydantic's.

        pydantic's secrets source would open a file for every setting, block for ever on
        a FIFO, and print a warning line for a missing directory.
        """
        directory = None
        if isinstance(file_secret_settings, SecretsSettingsSource):
            directory = file_secret_settings.secrets_dir
        return init_settings, env_settings, KeyFilesSource(settings_cls, directory)

    @property
    def targets(self) -> list[Target]:
        """Every configured project on every configured platform, in a stable order."""
        projects = self.project_ids or [""]
        return [Target(p, platform) for p in projects for platform in self.platforms]  # type: ignore[arg-type]

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """The parsed listen address."""
        return parse_listen_address(self.listen_address)


def _invalid(field: str, problem: str) -> PydanticCustomError:
    # A whole-model check that still names one setting: describe_error reads the field.
    return PydanticCustomError("invalid_setting", "{problem}", {"field": field, "problem": problem})


class KeyFilesSource(PydanticBaseSettingsSource):
    """The API keys from files in the secrets directory, each file checked before it is read.

    Only the files in :data:`KEY_FILES` are looked at. Each must be a regular file (a
    FIFO is never waited on: it is opened non-blocking and refused), readable, at most
    :data:`MAX_KEY_FILE_BYTES` and UTF-8; anything else is a :class:`ConfigError` that
    names the setting and the file, never its contents.
    """

    def __init__(self, settings_cls: type[BaseSettings], directory: Any) -> None:
        """Read from ``directory``; None reads nothing."""
        super().__init__(settings_cls)
        self._directory = Path(directory) if directory is not None else None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads every key file at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The key files' values under their variables' names, unless a flag or variable won."""
        if self._directory is None:
            return {}
        try:
            is_directory = stat.S_ISDIR(self._directory.stat().st_mode)
        except OSError as error:  # Path.is_dir() would raise PermissionError, say, as it is
            problem = "does not exist" if error.errno == errno.ENOENT else _reason(error)
            raise ConfigError(f"invalid setting {SECRETS_DIR_VARIABLE}: {problem}") from None
        if not is_directory:
            raise ConfigError(f"invalid setting {SECRETS_DIR_VARIABLE}: not a directory")
        values: dict[str, Any] = {}
        for field, names in KEY_FILES.items():
            if self._already_set(field, names):
                continue
            for name in names:
                value = _read_key_file(self._directory / name, field, name)
                if value is not None:
                    values[names[0]] = value
                    break
        return values

    def _already_set(self, field: str, names: tuple[str, ...]) -> bool:
        # The environment's UCLOUD_* name would lose to a file's UCDN_EXPORTER_* name at
        # validation (the first alias wins), so a file is read only when nothing else set it.
        return any(key in self.current_state for key in (field, *names))


def _read_key_file(path: Path, field: str, name: str) -> str | None:
    """The stripped text of one key file, None when it does not exist."""
    try:
        path.lstat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise setting_error(field, f"secrets file {name}: {_reason(error)}") from None
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        problem = "dangling symbolic link" if error.errno == errno.ENOENT else _reason(error)
        raise setting_error(field, f"secrets file {name}: {problem}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise setting_error(field, f"secrets file {name}: not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise setting_error(field, f"secrets file {name}: larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8", errors="strict").strip()
    except UnicodeDecodeError:
        raise setting_error(field, f"secrets file {name}: not UTF-8 text") from None


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file, or None when it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot be used ({_reason(error)})"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK, effective_ids=True):
        return "cannot be read (permission denied)"
    return None


def _reason(error: OSError) -> str:
    # strerror alone: str(error) would repeat the file name.
    return (error.strerror or "cannot be read").lower()


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """The command-line flag that sets ``field``."""
    return "--" + field.replace("_", "-")


def load_settings(
    overrides: dict[str, Any] | None = None, secrets_dir: Path | None = None
) -> Settings:
    """Build the settings from flags (``overrides``), environment and secrets files.

    Raises :class:`ConfigError` naming the first invalid setting.
    """
    directory = secrets_dir or _default_secrets_dir()
    try:
        return Settings(_secrets_dir=directory, **(overrides or {}))
    except ValidationError as error:
        raise ConfigError(describe_error(error)) from None


def _default_secrets_dir() -> Path | None:
    configured = os.environ.get(SECRETS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def describe_error(error: ValidationError) -> str:
    """One line naming the first invalid setting by its variable and flag, without its value."""
    first = error.errors(include_input=False, include_url=False)[0]
    location = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "invalid_setting":
        location = [first.get("ctx", {})["field"]]
    if not location:  # a whole-model check: its message names the setting itself
        return f"invalid configuration: {message}"
    field = location[0].lower()
    if field.startswith(ENV_PREFIX.lower()):
        field = field[len(ENV_PREFIX) :]
    if field.startswith("ucloud_"):
        field = field[len("ucloud_") :]
    return f"invalid setting {env_name(field)} ({flag_name(field)}): {message}"
