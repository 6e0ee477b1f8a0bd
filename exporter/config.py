"""Settings: environment variables, command-line flags and container secrets, validated once.

Every setting is an environment variable ``UCDN_EXPORTER_<NAME>`` and a flag
``--<name-with-dashes>``; the API keys are also read under the names UCloud's own
tools use (``UCLOUD_PUBLIC_KEY``/``UCLOUD_PRIVATE_KEY``) and from files in a secrets
directory (``/run/secrets`` when it exists). Precedence: flag, environment, secrets
file, default. :func:`load_settings` turns any invalid value into one
:class:`ConfigError` line that names the setting and never echoes its value.
"""

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "UCDN_EXPORTER_"
DEFAULT_PORT = 9866
DEFAULT_SECRETS_DIR = Path("/run/secrets")
DEFAULT_PROJECT_LABEL = "default"
PLATFORMS = ("cdn", "dcdn")
# 10 s to 4 h: prefetches of small files finish in seconds, large release artefacts in hours.
DEFAULT_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)

Platform = Literal["cdn", "dcdn"]
CommaList = Annotated[list[str], NoDecode]
CommaFloats = Annotated[list[float], NoDecode]


class ConfigError(Exception):
    """A setting is invalid; the message is one line fit for the user, free of secret values."""


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
    histogram_buckets: CommaFloats = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS),
        description="comma-separated bucket bounds in seconds of the URL completion histogram",
    )
    cache_seconds: float = Field(
        0, ge=0, description="reuse an answer for this long; 0 fetches on every scrape"
    )
    request_timeout_seconds: float = Field(
        10, gt=0, le=600, description="timeout of one API request (connect and each read)"
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="retries of a request after a connection error, 429 or 5xx"
    )
    max_response_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest API answer accepted, in bytes"
    )
    max_collection_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="most bytes of answers read for one target's collection; more is an error",
    )
    ca_bundle: Path | None = Field(
        None, description="CA bundle to verify the API's TLS certificate (private gateways)"
    )
    scrape_timeout_offset_seconds: float = Field(
        0.5, ge=0, description="subtracted from Prometheus' scrape timeout header"
    )
    max_scrape_timeout_seconds: float = Field(
        30,
        gt=0,
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
        40, ge=0, description="most HTTP requests served at once, 503 past it; 0 means no limit"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["logfmt", "json"] = Field("logfmt", description="log line format")
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
        return value.lower() if isinstance(value, str) else value

    @field_validator("platforms")
    @classmethod
    def _known_platforms(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PLATFORMS))
        if unknown:
            raise ValueError(f"unknown platform {unknown[0]!r}: choose from cdn, dcdn")
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
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @model_validator(mode="after")
    def _keys_unless_demo(self) -> "Settings":
        if not self.demo:
            if not self.public_key:
                raise ValueError("PUBLIC_KEY is required (or run with --demo)")
            if not self.private_key.get_secret_value():
                raise ValueError("PRIVATE_KEY is required (or run with --demo)")
        return self

    @property
    def targets(self) -> list[Target]:
        """Every configured project on every configured platform, in a stable order."""
        projects = self.project_ids or [""]
        return [Target(p, platform) for p in projects for platform in self.platforms]  # type: ignore[arg-type]

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """The parsed listen address."""
        return parse_listen_address(self.listen_address)


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); an empty host means every interface."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an exporter listens on all interfaces by default


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
    configured = os.environ.get(ENV_PREFIX + "SECRETS_DIR")
    if configured:
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def describe_error(error: ValidationError) -> str:
    """One line naming the first invalid setting by its variable and flag, without its value."""
    first = error.errors(include_input=False, include_url=False)[0]
    location = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if not location:  # a whole-model check: its message names the setting itself
        return f"invalid configuration: {message}"
    field = location[0].lower()
    if field.startswith(ENV_PREFIX.lower()):
        field = field[len(ENV_PREFIX) :]
    if field.startswith("ucloud_"):
        field = field[len("ucloud_") :]
    return f"invalid setting {env_name(field)} ({flag_name(field)}): {message}"
