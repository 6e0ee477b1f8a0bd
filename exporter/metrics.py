"""The metric contract: every family the exporter publishes, declared once.

Each :class:`Family` has its name, HELP text, type and label names, and whether its
series belong to a target (labelled ``project_id`` and ``platform``, served by
``/probe``) or to the process (served by ``/exporter-metrics``). The collector builds
its families from here, ``--once`` finds ``up`` here, the dashboard generator and the
tests take their names from here: a rename is one edit.

This module knows no other module of the exporter, so that the dashboard generator can
import it without the client or the server.
"""

import builtins  # inside Family, ``type`` is a field
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)

FamilyType = Literal["gauge", "counter", "gaugehistogram"]
TARGET_LABELS: Final = ("project_id", "platform")
PREFETCH_PREFIX: Final = "ucdn_prefetch_"
# The kinds of task the exporter can collect, each under its own prefix.
TASK_KINDS: Final = ("prefetch", "refresh")
# The sample suffixes of each type in the text exposition (a dashboard queries samples).
_SAMPLE_SUFFIXES: Final[dict[FamilyType, tuple[str, ...]]] = {
    "gauge": ("",),
    "counter": ("_total",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
}
# The metric family class of each type, which takes its label names by ``labels``.
_FAMILY_CLASSES: Final[dict[FamilyType, Callable[..., Metric]]] = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "gaugehistogram": GaugeHistogramMetricFamily,
}
_M = TypeVar("_M", bound=Metric)


@dataclass(frozen=True)
class Family:
    """One metric family of the exposition: what a scrape's ``# HELP``/``# TYPE`` lines say.

    ``labels`` are the family's own label names; a per-target family also carries
    :data:`TARGET_LABELS` first. ``cached`` families may come from a reused answer, so
    their HELP gains the cache note when a cache is configured.
    """

    name: str
    help: str
    type: FamilyType
    labels: tuple[str, ...] = ()
    per_target: bool = True
    cached: bool = True
    created: bool = False  # a counter whose series carry ``_created``

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every label name of the family's series, in exposition order."""
        return (*TARGET_LABELS, *self.labels) if self.per_target else self.labels

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The names its samples have in the text exposition (what PromQL queries)."""
        suffixes = _SAMPLE_SUFFIXES[self.type] + (("_created",) if self.created else ())
        return tuple(self.name + suffix for suffix in suffixes)

    def new(self, family_class: builtins.type[_M], cache_note: str = "") -> _M:
        """An empty metric family as ``family_class``, the class the caller adds samples
        with: its type's, or a base of it (any other is a TypeError: the contract and the
        caller disagree). ``cache_note`` is appended to the HELP when ``cached``."""
        documentation = self.help + (cache_note if self.cached else "")
        metric = _FAMILY_CLASSES[self.type](self.name, documentation, labels=self.label_names)
        if not isinstance(metric, family_class):
            raise TypeError(f"{self.name} is a {self.type}, not a {family_class.__name__}")
        return metric


# The process' own families: they belong to no target.
BUILD_INFO: Final = Family(
    PREFETCH_PREFIX + "exporter_build_info",
    "The exporter's version; always 1.",
    "gauge",
    ("version",),
    per_target=False,
    cached=False,
)
API_REQUESTS: Final = Family(
    "ucdn_api_requests",
    "API requests since the exporter started, by action and outcome (each retry counts).",
    "counter",
    ("action", "outcome"),
    per_target=False,
    cached=False,
)
PROCESS_FAMILIES: Final = (BUILD_INFO, API_REQUESTS)


@dataclass(frozen=True)
class DiscoveryFamilies:
    """The process' families of each account's project discovery (accounts whose projects
    are listed have none)."""

    success: Family
    last_success: Family
    projects: Family
    failures: Family

    def all(self) -> tuple[Family, ...]:
        """Every family, in exposition order."""
        return tuple(vars(self).values())


def _per_account(name: str, doc: str, family_type: FamilyType = "gauge") -> Family:
    return Family(name, doc, family_type, ("account",), per_target=False, cached=False)


DISCOVERY_FAMILIES: Final = DiscoveryFamilies(
    success=_per_account(
        "ucdn_project_discovery_success",
        "1 when this account's last project discovery succeeded, else 0 (the last good list "
        "is still collected).",
    ),
    last_success=_per_account(
        "ucdn_project_discovery_last_success_timestamp_seconds",
        "Unix time of this account's last successful project discovery.",
    ),
    projects=_per_account(
        "ucdn_project_discovery_projects",
        "Projects of this account collected after the filter (every shard's).",
    ),
    failures=_per_account(
        "ucdn_project_discovery_failures",
        "Failed project discoveries of this account since the exporter started.",
        "counter",
    ),
)
# A project's own series, as its quotas are: /metrics, and the probe of its first target.
PROJECT_INFO: Final = Family(
    "ucdn_project_info",
    "Every project collected, with its account and name (empty when not discovered); always 1.",
    "gauge",
    ("account", "project_id", "project_name"),
    per_target=False,
    cached=False,
)


@dataclass(frozen=True)
class TargetFamilies:
    """A task kind's per-target families, under its prefix, in exposition order."""

    up: Family
    scrape_duration: Family
    last_success: Family
    tasks: Family
    urls: Family
    url_progress: Family
    url_series_dropped: Family
    url_completion: Family
    task_completion: Family
    oldest_unfinished: Family
    records_invalid: Family
    domain_urls: Family
    urls_finished: Family
    tasks_finished: Family
    collection_requests: Family
    last_full_sync: Family

    def all(self) -> tuple[Family, ...]:
        """Every family, in exposition order."""
        return tuple(vars(self).values())


def target_families(prefix: str, tasks_word: str) -> TargetFamilies:
    """The per-target families of one kind of task: ``tasks_word`` is e.g. ``"Prefetch"``."""

    def gauge(name: str, doc: str, labels: tuple[str, ...] = (), cached: bool = True) -> Family:
        return Family(prefix + name, doc, "gauge", labels, cached=cached)

    return TargetFamilies(
        up=gauge("up", "1 when this target's collection in this scrape succeeded, else 0."),
        scrape_duration=gauge(
            "scrape_duration_seconds", "How long this target's collection took.", cached=False
        ),
        last_success=gauge(
            "last_success_timestamp_seconds",
            "Unix time of this target's last successful collection.",
        ),
        tasks=gauge(
            "tasks", f"{tasks_word} tasks created in the lookback window, by status.", ("status",)
        ),
        urls=gauge("urls", "URLs of those tasks, by URL status.", ("status",)),
        url_progress=gauge(
            "url_progress_ratio",
            "Progress (0-1) of each unfinished URL, newest tasks first, capped per target.",
            ("task_id", "url"),
        ),
        url_series_dropped=gauge(
            "url_series_dropped", "Unfinished URLs left out of url_progress_ratio by its cap."
        ),
        url_completion=Family(
            prefix + "url_completion_seconds",
            "FinishTime minus CreateTime of the window's finished URLs, by status.",
            "gaugehistogram",
            ("status",),
        ),
        task_completion=gauge(
            "task_completion_seconds",
            "Latest URL FinishTime minus CreateTime of the most recent finished tasks.",
            ("task_id",),
        ),
        oldest_unfinished=gauge(
            "oldest_unfinished_task_created_timestamp_seconds",
            "CreateTime of the oldest task in wait or process; absent when there is none.",
        ),
        records_invalid=gauge(
            "records_invalid", "Anomalies in this collection's answers, by reason.", ("reason",)
        ),
        domain_urls=gauge(
            "domain_urls",
            "URLs of those tasks by domain and URL status; the rarest domains as _other.",
            ("domain", "status"),
        ),
        urls_finished=Family(
            prefix + "urls_finished",
            "URLs a collection first saw finished since the exporter started, by status "
            "(not those the first collection found).",
            "counter",
            ("status",),
            created=True,
        ),
        tasks_finished=Family(
            prefix + "tasks_finished",
            f"{tasks_word} tasks a collection first saw finished (the task and all its URLs) "
            "since the exporter started, by status (not those the first collection found).",
            "counter",
            ("status",),
            created=True,
        ),
        collection_requests=gauge(
            "collection_api_requests",
            "API requests of the collection these figures come from, by kind of sync.",
            ("sync",),
        ),
        last_full_sync=gauge(
            "last_full_sync_timestamp_seconds",
            "Unix time of this target's last full fetch of the window.",
        ),
    )


PREFETCH_FAMILIES: Final = target_families(PREFETCH_PREFIX, "Prefetch")
REFRESH_FAMILIES: Final = target_families("ucdn_refresh_", "Refresh")
# Each kind's families, under the names of TASK_KINDS.
KIND_FAMILIES: Final = {"prefetch": PREFETCH_FAMILIES, "refresh": REFRESH_FAMILIES}


@dataclass(frozen=True)
class QuotaFamilies:
    """The per-project quota families (``project_id``, no ``platform``: quotas are per project)."""

    up: Family
    last_success: Family
    domains_dropped: Family
    quota: Family
    used: Family
    prefetch_enabled: Family

    def all(self) -> tuple[Family, ...]:
        """Every family, in exposition order."""
        return tuple(vars(self).values())


def _per_project(name: str, doc: str, labels: tuple[str, ...] = ()) -> Family:
    return Family(name, doc, "gauge", ("project_id", *labels), per_target=False, cached=False)


QUOTA_FAMILIES: Final = QuotaFamilies(
    up=_per_project(
        "ucdn_domain_quota_up", "1 when this project's last quota sweep succeeded, else 0."
    ),
    last_success=_per_project(
        "ucdn_domain_quota_last_success_timestamp_seconds",
        "Unix time at which this project's last successful quota sweep ended.",
    ),
    domains_dropped=_per_project(
        "ucdn_domain_quota_domains_dropped",
        "Domains not swept: beyond the exporter's cap, or listed without a DomainId.",
    ),
    quota=_per_project("ucdn_domain_quota", "A domain's daily quota, by kind.", ("domain", "kind")),
    used=_per_project(
        "ucdn_domain_quota_used",
        "What was submitted today against that quota.",
        ("domain", "kind"),
    ),
    prefetch_enabled=_per_project(
        "ucdn_domain_prefetch_enabled", "1 when prefetch is switched on.", ("domain",)
    ),
)
# Only with background collection (BACKGROUND_COLLECTION): the age of what a scrape
# publishes, and the pace the gateway's refusals left.
FIGURES_AGE: Final = Family(
    "ucdn_figures_age_seconds",
    "Seconds since the figures published for this target and kind were collected "
    "(background collection); absent before the first success.",
    "gauge",
    ("kind",),
    cached=False,
)
API_PACE: Final = Family(
    "ucdn_api_pace_requests_per_second",
    "API requests per second this account's client allows now (background collection): the "
    "configured rate, less after the gateway refused requests for its rate (RetCode 153); "
    "0 means no limit.",
    "gauge",
    ("account",),
    per_target=False,
    cached=False,
)
BACKGROUND_FAMILIES: Final = (FIGURES_AGE, API_PACE)
ALL_FAMILIES: Final = (
    *PROCESS_FAMILIES,
    *DISCOVERY_FAMILIES.all(),
    PROJECT_INFO,
    *PREFETCH_FAMILIES.all(),
    *REFRESH_FAMILIES.all(),
    *QUOTA_FAMILIES.all(),
)


def sample_names() -> frozenset[str]:
    """Every sample name the exporter can publish, in either mode (what a dashboard or rule
    may query)."""
    families = (*ALL_FAMILIES, *BACKGROUND_FAMILIES)
    return frozenset(name for family in families for name in family.sample_names)
