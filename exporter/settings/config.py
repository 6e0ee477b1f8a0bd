"""Settings: environment variables, command-line flags and container secrets, validated once.

Every setting is an environment variable ``UCDN_EXPORTER_<NAME>`` and a flag
``--<name-with-dashes>``; the API keys, the projects and the API URL are also read under
the names UCloud's own tools use (``UCLOUD_PUBLIC_KEY``, ``UCLOUD_PRIVATE_KEY``,
``UCLOUD_PROJECT_ID``, ``UCLOUD_API_BASE_URL``) and from UCloud's profile files, and the
keys from files in a secrets directory (``/run/secrets`` when it exists, or
``UCDN_EXPORTER_SECRETS_DIR``), named like those variables. Precedence: flag, our
variable, UCloud's variable, profile, secrets file, default (docs/credentials.md).
:func:`load_settings` turns any invalid value into one :class:`ConfigError` line that
names the setting and never echoes its value.
"""

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from exporter.metrics import TASK_KINDS
from exporter.settings.accounts import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_URL,
    DISCOVER,
    AccountSettings,
    AccountsFile,
    compile_filter,
)
from exporter.settings.address import DEFAULT_PORT, http_url_problem, parse_listen_address
from exporter.settings.names import (
    ENV_PREFIX,
    ConfigError,
    Notice,
    collecting_notices,
    describe_error,
    flag_name,
)
from exporter.settings.secret_files import (
    KEY_FILES,
    KeyFilesSource,
    default_secrets_dir,
    regular_file_problem,
)
from exporter.settings.target import DEFAULT_PROJECT_LABEL, PLATFORMS, Target
from exporter.settings.ucloud_profiles import ProfileFilesSource

# 10 s to 4 h: prefetches of small files finish in seconds, large release artefacts in hours.
DEFAULT_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
# 1 s to 1 h: a refresh takes effect in about a minute; one past 10 minutes is for support.
DEFAULT_REFRESH_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# The longest the exporter waits for anything (a scrape's deadline, a cached answer's age):
# more than any scrape needs, and far within what a lock, a timer or a socket accepts
# (threading.TIMEOUT_MAX: 292 years on Linux, 49 days on Windows); 1e10 s validated and
# then failed every scrape with "timestamp out of range for platform time_t".
_DAY_SECONDS = 86400
# Most URL or task series per target, as for domains: a count past sys.maxsize validated
# and then failed every collection.
_MAX_SERIES = 100_000


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A list setting is written comma-separated, in a flag as in the environment.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
CommaFloats = Annotated[list[float], NoDecode, BeforeValidator(_split_commas)]


def _key_alias(name: str) -> AliasChoices:
    return AliasChoices(ENV_PREFIX + name, "UCLOUD_" + name)


class Settings(BaseSettings):
    """The exporter's configuration; field descriptions are the ``--help`` texts."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        hide_input_in_errors=True,
        extra="ignore",
        populate_by_name=True,
        # No setting has a use for inf or NaN, and +Inf is a histogram's own last bucket.
        allow_inf_nan=False,
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
    api_url: str = Field(
        DEFAULT_API_URL,
        validation_alias=AliasChoices(ENV_PREFIX + "API_URL", "UCLOUD_API_BASE_URL"),
        description="base URL of the UCDN API gateway",
    )
    project_ids: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices(ENV_PREFIX + "PROJECT_IDS", "UCLOUD_PROJECT_ID"),
        description="comma-separated project IDs, or 'auto': every project the account lists "
        f"(GetProjectList); empty means the account's default project, labelled "
        f"'{DEFAULT_PROJECT_LABEL}'",
    )
    project_filter: str = Field(
        "",
        description="with project IDs 'auto', a regular expression searched in each "
        "discovered project's ID and name: only the projects it matches are collected; "
        "empty collects them all",
    )
    project_discovery_interval_seconds: float = Field(
        3600,
        ge=5,
        le=_DAY_SECONDS,
        description="with project IDs 'auto', how often the account's projects are listed again",
    )
    accounts_file: Path | None = Field(
        None,
        description="YAML file of several accounts, each with its keys, API URL, projects and "
        "platforms; replaces the top-level keys, API URL, projects and platforms",
    )
    shard: int = Field(
        0, ge=0, description="this replica's share of the targets, from 0 to TOTAL_SHARDS - 1"
    )
    total_shards: int = Field(
        1,
        ge=1,
        le=1000,
        description="replicas that share the targets, each project on exactly one of them",
    )
    platforms: CommaList = Field(
        default_factory=lambda: ["cdn"], description="comma-separated subset of cdn,dcdn"
    )
    lookback_seconds: int = Field(
        86400, ge=60, le=31 * 86400, description="window of task creation times to report"
    )
    resync_seconds: float = Field(
        900,
        ge=0,
        le=31 * 86400,
        description="how often the whole window is fetched again; between, only what changed; "
        "0 fetches it whole on every scrape",
    )
    overlap_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="between full fetches, how far before the last EndTime new tasks are "
        "asked for (tasks the API lists late)",
    )
    task_lookup_batch: int = Field(
        100, ge=1, le=1000, description="unfinished tasks asked for by TaskId per request"
    )
    stuck_horizon_seconds: int = Field(
        7 * 86400,
        ge=0,
        le=366 * 86400,
        description="how old an unfinished task may be and still be followed after it leaves "
        "the window",
    )
    max_stored_tasks: int = Field(
        50_000,
        ge=1,
        le=100_000_000,
        description="per target and kind, most tasks kept between collections; more fails "
        "the target and drops them all",
    )
    page_size: int = Field(100, ge=1, le=10000, description="tasks asked for per API request")
    max_pages: int = Field(
        1000, ge=1, description="hard cap on pages per target and collection; more is an error"
    )
    parallel_pages: int = Field(8, ge=1, le=64, description="pages fetched at once per target")
    max_url_series: int = Field(
        1000,
        ge=0,
        le=_MAX_SERIES,
        description="per target, most ucdn_prefetch_url_progress_ratio series",
    )
    max_task_series: int = Field(
        100,
        ge=0,
        le=_MAX_SERIES,
        description="per target, most ucdn_prefetch_task_completion_seconds series",
    )
    max_label_value_length: int = Field(
        1024,
        ge=64,
        description="longest label value (url, task_id, domain), in UTF-8 bytes; longer ones "
        "are cut to a prefix, '…' and a hash of the whole value",
    )
    histogram_buckets: CommaFloats = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS),
        description="comma-separated bucket bounds in seconds of the URL completion histogram",
    )
    task_kinds: CommaList = Field(
        default_factory=lambda: list(TASK_KINDS),
        description="comma-separated kinds of task to collect: prefetch, refresh or both",
    )
    refresh_buckets: CommaFloats = Field(
        default_factory=lambda: list(DEFAULT_REFRESH_BUCKETS),
        description="comma-separated bucket bounds in seconds of the refresh URL completion "
        "histogram",
    )
    max_domain_series: int = Field(
        100, ge=1, le=100_000, description="per target and kind, most domain_urls domains"
    )
    max_domains: int = Field(
        500, ge=1, le=100_000, description="per project, most domains whose quotas are asked for"
    )
    quota_interval_seconds: float = Field(
        300,
        ge=0,
        le=_DAY_SECONDS,
        description="how often the domains' daily quotas are asked for; 0 never asks",
    )
    quota_parallel_requests: int = Field(
        4, ge=1, le=64, description="quota requests in flight at once, for each project"
    )
    cache_seconds: float = Field(
        0,
        ge=0,
        le=_DAY_SECONDS,
        description="reuse an answer for this long; 0 fetches on every scrape",
    )
    request_timeout_seconds: float = Field(
        10,
        gt=0,
        le=600,
        description="longest one API exchange may take, in total (connect, headers, body)",
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
        description="most API requests per second of each account, shared by its targets, "
        "quota sweeps and discovery (keeps a fleet under the gateway's rate limit, RetCode "
        "153); 0 means no limit",
    )
    background_collection: bool = Field(
        False,
        description="collect every target in the background, within the request budget, and "
        "answer each scrape at once with each target's last good figures and their age; off: "
        "each scrape collects its targets",
    )
    max_staleness_seconds: float = Field(
        180,
        ge=10,
        le=_DAY_SECONDS,
        description="with background collection, figures older than this publish up 0 and no "
        "figures; an idle target is refreshed well within it",
    )
    max_collection_threads: int = Field(
        8,
        ge=1,
        le=256,
        description="with background collection, targets collected at once",
    )
    ca_bundle: Path | None = Field(
        None, description="CA bundle to verify the API's TLS certificate (private gateways)"
    )
    scrape_timeout_offset_seconds: float = Field(
        0.5,
        ge=0,
        le=_DAY_SECONDS,
        description="subtracted from Prometheus' scrape timeout header",
    )
    max_scrape_timeout_seconds: float = Field(
        30,
        gt=0,
        le=_DAY_SECONDS,
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
        description="most HTTP requests served at once, 503 past it; 0 means no limit",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level: debug, info, warning (or warn) or error"
    )
    log_format: Literal["logfmt", "json"] = Field(
        "logfmt", description="log line format: logfmt or json"
    )
    demo: bool = Field(
        False,
        description="serve a built-in simulated API on loopback and need no account; API "
        "keys given anywhere are ignored (the log names them)",
    )

    _notices: tuple[Notice, ...] = PrivateAttr(default=())
    _file_accounts: tuple[AccountSettings, ...] = PrivateAttr(default=())

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

    @field_validator("task_kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        if set(value) - set(TASK_KINDS):
            raise ValueError(f"unknown kind of task: choose from {', '.join(TASK_KINDS)}")
        if not value:
            raise ValueError("at least one kind of task is needed")
        if len(set(value)) != len(value):
            raise ValueError("names a kind of task twice")
        return value

    @field_validator("project_ids")
    @classmethod
    def _unique_projects(cls, value: list[str]) -> list[str]:
        if DISCOVER in value and len(value) > 1:
            raise ValueError(f"'{DISCOVER}' discovers every project and takes no project IDs")
        return list(dict.fromkeys(value))

    @field_validator("project_filter")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_filter(value)
        return value

    @field_validator("histogram_buckets", "refresh_buckets")
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
        problem = http_url_problem(value)
        if problem:
            raise ValueError(problem)
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
    def _consistent(self) -> "Settings":
        if self.shard >= self.total_shards:
            raise _invalid("shard", f"must be less than total_shards ({self.total_shards})")
        if self.project_filter and self.project_ids != [DISCOVER]:
            raise _invalid("project_filter", f"needs project IDs '{DISCOVER}'")
        return self

    @model_validator(mode="after")
    def _keys_unless_demo(self) -> "Settings":
        if self.accounts_file is not None:
            return self  # each account of the file has its own keys, checked there
        if self.demo:
            # An API URL says "this gateway", which the demo would not call. Keys are
            # different: UCloud's own tools read UCLOUD_*_KEY from the same shell, and the
            # demo signs with the simulator's keys, so it ignores them (the command line
            # logs which: key_sources).
            if "api_url" in self.model_fields_set:
                raise _invalid("api_url", "cannot be combined with --demo")
            return self
        keys = {"public_key": self.public_key, "private_key": self.private_key.get_secret_value()}
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
        """Flags, then the environment (ours, then UCloud's names: the aliases' order), then
        the UCloud profile, then our own key files instead of pydantic's secrets source
        (:mod:`exporter.settings.secret_files` says why); the defaults last."""
        directory = None
        if isinstance(file_secret_settings, SecretsSettingsSource):
            directory = file_secret_settings.secrets_dir
        return (
            init_settings,
            env_settings,
            ProfileFilesSource(settings_cls, os.environ),
            KeyFilesSource(settings_cls, directory),
        )

    @property
    def notices(self) -> tuple[Notice, ...]:
        """Warnings found while the settings were read, for the log once it is set up."""
        return self._notices

    @property
    def discovers_projects(self) -> bool:
        """Whether the top-level account's projects are discovered (project IDs 'auto')."""
        return self.project_ids == [DISCOVER]

    @property
    def targets(self) -> list[Target]:
        """Every listed project of the top-level account on every configured platform, in a
        stable order; none when its projects are discovered."""
        if self.discovers_projects:
            return []
        projects = self.project_ids or [""]
        return [Target(p, platform) for p in projects for platform in self.platforms]  # type: ignore[arg-type]

    @property
    def accounts(self) -> tuple[AccountSettings, ...]:
        """The accounts to collect: the accounts file's when there is one, else the
        top-level settings' one, named ``default``."""
        if self.accounts_file is not None:
            return self._file_accounts
        return (self._top_level_account(),)

    def _top_level_account(self) -> AccountSettings:
        return AccountSettings(
            name=DEFAULT_ACCOUNT,
            public_key=self.public_key,
            private_key=self.private_key,
            api_url=self.api_url,
            project_ids=None if self.discovers_projects else tuple(self.project_ids or [""]),
            project_filter=compile_filter(self.project_filter),
            platforms=tuple(self.platforms),  # type: ignore[arg-type]
        )

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """The parsed listen address."""
        return parse_listen_address(self.listen_address)


def _invalid(field: str, problem: str) -> PydanticCustomError:
    # A whole-model check that still names one setting: describe_error reads the field.
    return PydanticCustomError("invalid_setting", "{problem}", {"field": field, "problem": problem})


def load_settings(
    overrides: dict[str, Any] | None = None, secrets_dir: Path | None = None
) -> Settings:
    """Build the settings from flags (``overrides``), environment, the UCloud profile and
    secrets files.

    Raises :class:`ConfigError` naming the first invalid setting; the warnings found on the
    way (a key file others can read...) are in :attr:`Settings.notices`, to be logged.
    """
    directory = secrets_dir or default_secrets_dir()
    try:
        with collecting_notices() as notices:
            settings = Settings(_secrets_dir=directory, **(overrides or {}))
            if settings.accounts_file is not None:
                accounts = AccountsFile(settings.accounts_file, os.environ, settings.demo)
                settings._file_accounts = accounts.load()
    except ValidationError as error:
        raise ConfigError(describe_error(error)) from None
    settings._notices = tuple(notices)
    return settings


def key_sources(
    overrides: Mapping[str, Any] | None = None, secrets_dir: Path | None = None
) -> dict[str, list[str]]:
    """Where API keys are given: the flags, variables and secrets files that hold one.

    Names only, never a value, by kind (``flags``, ``variables``, ``secrets_files``; a kind
    with none is left out), from the sources :func:`load_settings` reads: what ``--demo``
    ignores.
    """
    directory = secrets_dir or default_secrets_dir()
    # pydantic-settings reads variables whatever their case.
    variables = {name.upper() for name, value in os.environ.items() if value}
    sources: dict[str, list[str]] = {"flags": [], "variables": [], "secrets_files": []}
    for field, names in KEY_FILES.items():
        if (overrides or {}).get(field):
            sources["flags"].append(flag_name(field))
        sources["variables"] += [name for name in names if name in variables]
        if directory is not None:
            sources["secrets_files"] += [name for name in names if (directory / name).exists()]
    return {kind: names for kind, names in sources.items() if names}


def setting_default(field: str) -> Any:
    """The default of setting ``field``: the one place defaults are written is the model."""
    return Settings.model_fields[field].get_default(call_default_factory=True)
