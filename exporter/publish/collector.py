"""The Prometheus collector: each scrape fetches every target's tasks into fresh metric families.

It knows the API client and the summaries, never configuration files or HTTP serving:
the caller hands it the scrape's :class:`~exporter.gateway.deadline.Deadline`. Targets are
collected in parallel; a target that fails or runs out of time reports ``up 0`` and
its duration only, so nothing stale is ever published as fresh, and the scrape still
answers.

The targets are a :class:`~exporter.collection.catalogue.Catalogue`'s as they are at each
scrape: a target a discovery adds is collected from that scrape on, through its account's
client, and one that goes loses its series and what was kept of it. Every target is
collected for every configured kind of task (prefetch, refresh), each kind under its own
prefix with the same families. Series are of three kinds: a target's
(every one labelled with ``project_id`` and ``platform``), a project's (its quotas, its
``ucdn_project_info``), which go with its first target, and the process' own (build info,
the API request counter, each account's discovery), which no target owns. ``/metrics``
gets them all, a probe its target's and, for a project's first target, its project's, so
that a probe job per target plus one job for the process' series publish each series
exactly once.

With :class:`BackgroundOptions`, a :class:`~exporter.collection.planner.Planner` collects
the targets in the background instead, and a scrape never calls the gateway: it publishes
each target's last good collection, ``up 1`` while that is at most ``max_staleness``
seconds old, with its age (``ucdn_figures_age_seconds``); older, ``up 0`` and no
figures. Discovery and the quota sweeps are started by the planner's tick, never by a
scrape.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.collection.catalogue import Catalogue, TargetEntry
from exporter.collection.kinds import TaskKind
from exporter.collection.planner import PLANNED_SHARE, Planner, Refresh
from exporter.collection.quota_sweep import QuotaClient
from exporter.collection.singleflight import SharedFetches, ShutdownError
from exporter.collection.sync import Collection, SyncOptions, TaskSync
from exporter.gateway.answers import ACTIONS
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import OUTCOMES, ApiError
from exporter.gateway.retcodes import hint_for
from exporter.metrics import (
    API_PACE,
    API_REQUESTS,
    BACKGROUND_FAMILIES,
    BUILD_INFO,
    DISCOVERY_FAMILIES,
    FIGURES_AGE,
    PROCESS_FAMILIES,
    PROJECT_INFO,
)
from exporter.publish.families import TargetRow, go_float, target_families
from exporter.settings.config import setting_default
from exporter.settings.target import PLATFORMS, Target
from exporter.summary.target_summary import SummaryLimits
from exporter.version import __version__

log = logging.getLogger(__name__)
# Fetch threads per kind while discovered targets may come: threads start only as needed.
_DISCOVERED_TARGETS_ROOM = 256


@dataclass(frozen=True)
class TargetResult:
    """One target's collection of one kind in a scrape: how long it took, and what it
    collected (None: it failed or ran out of time)."""

    target: Target
    seconds: float
    collection: Collection | None
    failure_reason: str | None = None


@dataclass(frozen=True)
class BackgroundOptions:
    """Background collection: how old figures may be published, how many targets are
    collected at once, each collection's own deadline, and the share of the request
    budget the targets may plan with (the rest the quota sweeps always keep; they also
    get what the targets leave)."""

    max_staleness: float = setting_default("max_staleness_seconds")
    max_threads: int = setting_default("max_collection_threads")
    collection_seconds: float = setting_default("max_scrape_timeout_seconds")
    budget_share: float = 1.0


class MetricsSnapshot(Collector):
    """Metrics already collected, as a registry hands them to prometheus_client's encoders."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class FamilySource(Protocol):
    """Per-project families beside the targets', collected within a deadline (the quotas)."""

    def families(
        self, deadline: Deadline, project_ids: Iterable[str] | None = None
    ) -> list[Metric]:
        """The families of every project (or of ``project_ids``), by ``deadline``."""
        ...

    def follow(self, projects: Mapping[str, QuotaClient]) -> None:
        """The projects from now on, each with the client of its account."""
        ...

    def describe(self) -> list[Metric]:
        """The families without samples: registering makes no call."""
        ...

    def tick(self, requests_per_second: float) -> None:
        """Background collection: start the work that is due, within the
        ``requests_per_second`` it may spend (0: no limit)."""
        ...

    def close(self) -> None:
        """End the source's work in flight: the collector is closing."""
        ...


class UcdnCollector(Collector):
    """Publishes the tasks of every target and kind, fetched when Prometheus scrapes.

    The application and ``--once`` call :meth:`collect_within` with their deadline; a
    prometheus_client registry (the in-process tests, an embedding program) calls
    :meth:`collect`, which uses the default deadline, after :meth:`describe`, which
    makes no API call.

    A scrape of one healthy target yields, among others::

        # HELP ucdn_prefetch_up 1 when this target's collection in this scrape succeeded, else 0.
        # TYPE ucdn_prefetch_up gauge
        ucdn_prefetch_up{platform="cdn",project_id="default"} 1.0
        # HELP ucdn_prefetch_tasks Prefetch tasks created in the lookback window, by status.
        # TYPE ucdn_prefetch_tasks gauge
        ucdn_prefetch_tasks{platform="cdn",project_id="default",status="success"} 41.0
        ucdn_prefetch_tasks{platform="cdn",project_id="default",status="wait"} 2.0
        ...
        # TYPE ucdn_prefetch_url_completion_seconds histogram
        ucdn_prefetch_url_completion_seconds_bucket{le="10.0",...,status="success"} 3.0
    """

    def __init__(
        self,
        source: ApiClient | Catalogue,
        targets: Sequence[Target] = (),
        *,
        kinds: Sequence[TaskKind] | None = None,
        limits: SummaryLimits | None = None,
        sync: SyncOptions | None = None,
        cache_seconds: float = setting_default("cache_seconds"),
        default_timeout: float = setting_default("max_scrape_timeout_seconds"),
        wall_clock: Callable[[], float] = time.time,
        extra: Sequence[FamilySource] = (),
        background: BackgroundOptions | None = None,
    ) -> None:
        """Collect ``kinds`` of every target; without ``kinds``, prefetch with ``limits``.

        ``source`` is the catalogue of the targets, or a client whose ``targets`` make the
        catalogue of one account with those targets.

        ``sync`` says how far back tasks are reported and how often the window is
        fetched whole (see :mod:`exporter.collection.sync`). ``extra`` sources add their
        families to ``/metrics`` after the targets'. With ``background``, a planner
        collects the targets once :meth:`start` is called, and scrapes only read.
        """
        if kinds is None:
            kinds = [TaskKind.named("prefetch", limits or SummaryLimits())]
        elif limits is not None or not kinds:
            raise ValueError("kinds need at least one kind, and carry their own limits")
        if isinstance(source, Catalogue):
            if targets:
                raise ValueError("a catalogue's targets are its own")
            self._catalogue = source
        else:
            self._catalogue = Catalogue.listed(source, targets)
        self._kinds = list(kinds)
        self._catalogue.track(kind.name for kind in self._kinds)
        self._sync_options = sync or SyncOptions()
        self._wall_clock = wall_clock
        self._syncs: dict[tuple[Target, TaskKind], TaskSync] = {}
        self._entries: list[TargetEntry] = []
        self._extra = list(extra)
        self._cache_seconds = cache_seconds
        self._default_timeout = default_timeout
        # Fetches run until the latest deadline of the scrapes waiting for them. Twice the
        # (target, kind) pairs: a fetch that ran out of time may still be ending when its
        # successor starts.
        room = len(self._catalogue.current())
        if self._catalogue.discovers:
            room = max(room, _DISCOVERED_TARGETS_ROOM)
        self._shared: SharedFetches[tuple[Target, TaskKind], Collection] = SharedFetches(
            ttl=cache_seconds, max_workers=2 * max(1, room * len(self._kinds))
        )
        self._last_success: dict[tuple[Target, TaskKind], float] = {}
        self._lock = threading.Lock()
        self._background = background
        self._planner: Planner[tuple[Target, TaskKind]] | None = None
        if background is not None:
            self._planner = Planner(
                self._refresh,
                max_staleness=background.max_staleness,
                max_threads=background.max_threads,
                on_tick=self._tick,
                budget=self._target_budget,
            )
        self._follow(self._catalogue.current())

    @property
    def planner(self) -> "Planner[tuple[Target, TaskKind]] | None":
        """The background collection's planner (None: each scrape collects)."""
        return self._planner

    def start(self) -> None:
        """Start the background collection, if configured (else nothing to start)."""
        if self._planner is not None:
            self._planner.start()

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue of the targets collected."""
        return self._catalogue

    @property
    def targets(self) -> list[Target]:
        """The targets this collector is allowed to fetch now (a due discovery runs first;
        in the background, the planner's tick runs it)."""
        if self._planner is not None:
            with self._lock:
                return [entry.target for entry in self._entries]
        return [entry.target for entry in self._follow(self._catalogue.entries())]

    @property
    def kinds(self) -> list[TaskKind]:
        """The kinds of task collected for every target."""
        return list(self._kinds)

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so that registering makes no API call."""
        families = [
            *PROCESS_FAMILIES,
            *DISCOVERY_FAMILIES.all(),
            *(f for kind in self._kinds for f in kind.families.all()),
            PROJECT_INFO,
            *(BACKGROUND_FAMILIES if self._planner is not None else ()),
        ]
        return [*(family.new(Metric) for family in families), *self._described_extra()]

    def _described_extra(self) -> Iterable[Metric]:
        return (metric for source in self._extra for metric in source.describe())

    def collect(self) -> Iterable[Metric]:
        """:meth:`collect_within` the default deadline (for a registry, which has none)."""
        return self.collect_within(Deadline.after(self._default_timeout))

    def collect_within(self, deadline: Deadline) -> Iterator[Metric]:
        """The process' own series, then every target's and project's: what ``/metrics``
        serves. Every call to the gateway is made before this returns; the targets'
        families are filled as they are iterated (see :mod:`exporter.publish.families`)."""
        entries = self._scraped_entries(deadline)
        targets = self.collect_targets(deadline, [entry.target for entry in entries])
        info = self._project_info(entries)
        extra = [metric for source in self._extra for metric in source.families(deadline)]
        # After the targets, so that the request counter includes this scrape's requests.
        return chain(self.exporter_metrics(), targets, [info], extra)

    def collect_probe(self, deadline: Deadline, target: Target) -> Iterator[Metric]:
        """What ``/probe`` serves for ``target``: its series, and its project's if it owns them.

        A project's own series (the quotas) go with its first target in platform order, so
        that across one probe per target each series appears exactly once.
        """
        entries = self._scraped_entries(deadline)
        metrics = self.collect_targets(deadline, [target])
        if self._owner_of(entries, target.project_id) != target:
            return metrics
        info = self._project_info(e for e in entries if e.target == target)
        project = [target.project_id]
        extra = [metric for source in self._extra for metric in source.families(deadline, project)]
        return chain(metrics, [info], extra)

    def _scraped_entries(self, deadline: Deadline) -> list[TargetEntry]:
        """The targets a scrape publishes: after a due discovery, within its deadline; in
        the background, as the planner's tick left them (a scrape calls nothing)."""
        if self._planner is not None:
            with self._lock:
                return list(self._entries)
        return self._follow(self._catalogue.refresh(deadline))

    @staticmethod
    def _owner_of(entries: Sequence[TargetEntry], project_id: str) -> Target | None:
        return min(
            (e.target for e in entries if e.target.project_id == project_id),
            key=lambda t: PLATFORMS.index(t.platform),
            default=None,
        )

    def _follow(self, entries: list[TargetEntry]) -> list[TargetEntry]:
        """Make the syncs of targets that appeared, drop those of targets that went (their
        series, stores and cached answers with them); tell the sources the projects."""
        with self._lock:
            if entries == self._entries:
                return entries
            now = {entry.target for entry in entries}
            gone = [key for key in self._syncs if key[0] not in now]
            for key in gone:
                del self._syncs[key]
                self._last_success.pop(key, None)
            for entry in entries:
                client = self._catalogue.client(entry.account)
                for kind in self._kinds:
                    if (entry.target, kind) not in self._syncs:
                        self._syncs[entry.target, kind] = TaskSync(
                            client, entry.target, kind, self._sync_options, self._wall_clock
                        )
            self._entries = entries
            jobs = list(self._syncs)
        if self._planner is not None:
            self._planner.follow(jobs)
        self._shared.forget(gone)
        self._catalogue.forget(target for target, _ in gone)
        projects: dict[str, QuotaClient] = {}
        for entry in entries:  # a project in two accounts: the first one's
            projects.setdefault(entry.target.project_id, self._catalogue.client(entry.account))
        for source in self._extra:
            source.follow(projects)
        return entries

    @staticmethod
    def _project_info(entries: Iterable[TargetEntry]) -> Metric:
        """``ucdn_project_info`` 1 for each project of ``entries``, once."""
        info = PROJECT_INFO.new(GaugeMetricFamily)
        seen: set[str] = set()
        for entry in entries:
            if entry.target.project_id not in seen:
                seen.add(entry.target.project_id)
                info.add_metric([entry.account, entry.target.project_label, entry.project_name], 1)
        return info

    def collect_targets(self, deadline: Deadline, targets: Sequence[Target]) -> Iterator[Metric]:
        """``targets``' series of every kind, fetched in parallel, within ``deadline``; in
        the background, as the planner last collected them. Fetched before this returns,
        filled into families as they are iterated."""
        if self._planner is not None:
            return self._published_targets(targets)
        started = time.monotonic()
        attempt = self._wall_clock()
        futures = [
            (kind, target, self._fetch(target, kind, deadline))
            for kind in self._kinds
            for target in targets
        ]
        results = {
            (kind, target): self._wait(target, kind, future, deadline, started)
            for kind, target, future in futures
        }
        for (kind, _), result in results.items():
            self._record(kind, attempt, result)
        return chain.from_iterable(
            self._families(kind, [results[kind, target] for target in targets])
            for kind in self._kinds
        )

    def _published_targets(self, targets: Sequence[Target]) -> Iterator[Metric]:
        """``targets``' series from the planner's last collections: up 1 and the figures
        while they are at most ``max_staleness`` old, then up 0 alone."""
        assert self._planner is not None and self._background is not None
        now = self._wall_clock()
        ages = FIGURES_AGE.new(GaugeMetricFamily)
        kinds: list[Iterator[Metric]] = []
        for kind in self._kinds:
            results = []
            for target in targets:
                state = self._planner.state((target, kind))
                last = None if state is None else state.last
                good = None if state is None else state.good
                age = None if good is None else max(0.0, now - good.finished_at)
                fresh = good if age is not None and age <= self._background.max_staleness else None
                seconds = 0.0 if last is None else last.seconds
                results.append(TargetResult(target, seconds, fresh))
                if age is not None:
                    ages.add_metric([target.project_label, target.platform, kind.name], age)
            kinds.append(self._families(kind, results))
        return chain(*kinds, [ages])

    def _refresh(self, job: tuple[Target, TaskKind]) -> Refresh:
        """One background collection of ``job``, recorded as a scrape's would be."""
        target, kind = job
        started = time.monotonic()
        attempt = self._wall_clock()
        assert self._background is not None
        deadline = Deadline.after(self._background.collection_seconds)
        done: Future[Collection] = Future()
        try:
            done.set_result(self._load(target, kind, deadline))
        except Exception as error:  # _wait tells an API error from a bug, as for a scrape
            done.set_exception(error)
        result = self._wait(target, kind, done, deadline, started)
        self._record(kind, attempt, result)
        return Refresh(result.collection, result.seconds, result.failure_reason)

    def _record(self, kind: TaskKind, attempt: float, result: TargetResult) -> None:
        """Tell the catalogue how a collection that started at ``attempt`` went."""
        collection = result.collection
        self._catalogue.record(
            result.target,
            kind.name,
            attempt,
            success=None if collection is None else collection.finished_at,
            failure_reason=result.failure_reason,
            requests=0 if collection is None else collection.requests,
        )

    def _target_budget(self) -> float:
        """The requests per second the targets may plan with (0: no limit)."""
        assert self._background is not None
        pace = sum(client.pace for client in self._catalogue.clients())
        return pace * self._background.budget_share

    def _tick(self) -> None:
        """The planner's periodic work: a due discovery, then the quota sweeps' turn, with
        what of the budget the targets leave (at least its ``1 - budget_share``)."""
        assert self._background is not None and self._planner is not None
        self._follow(self._catalogue.refresh(Deadline.after(self._background.collection_seconds)))
        pace = sum(client.pace for client in self._catalogue.clients())
        floor = pace * (1 - self._background.budget_share)
        planned = PLANNED_SHARE * pace - self._planner.demand()
        left = max(floor, planned) if pace > 0 else 0.0
        for source in self._extra:
            source.tick(left)

    def exporter_metrics(self) -> list[Metric]:
        """The process' own series, which belong to no target: build info, API requests of
        every account, each account's discovery."""
        build_info = BUILD_INFO.new(GaugeMetricFamily)
        api_requests = API_REQUESTS.new(CounterMetricFamily)
        build_info.add_metric([__version__], 1)
        snapshots = [client.stats.snapshot() for client in self._catalogue.clients()]
        for action in ACTIONS:
            for outcome in OUTCOMES:
                count = sum(counts.get((action, outcome), 0) for counts in snapshots)
                api_requests.add_metric([action, outcome], count)
        metrics = [build_info, api_requests, *self._discovery_metrics()]
        if self._planner is not None:
            pace = API_PACE.new(GaugeMetricFamily)
            for known in self._catalogue.project_lists():
                pace.add_metric([known.account], self._catalogue.client(known.account).pace)
            metrics.append(pace)
        return metrics

    def _discovery_metrics(self) -> list[Metric]:
        """Each discovering account's last discovery (accounts with listed projects: none)."""
        success = DISCOVERY_FAMILIES.success.new(GaugeMetricFamily)
        last_success = DISCOVERY_FAMILIES.last_success.new(GaugeMetricFamily)
        projects = DISCOVERY_FAMILIES.projects.new(GaugeMetricFamily)
        failures = DISCOVERY_FAMILIES.failures.new(CounterMetricFamily)
        for known in self._catalogue.project_lists():
            if known.mode != "auto":
                continue
            labels = [known.account]
            if known.last_attempt is not None:
                success.add_metric(labels, 1 if known.last_error is None else 0)
            if known.last_success is not None:
                last_success.add_metric(labels, known.last_success)
            projects.add_metric(labels, len(known.projects))
            failures.add_metric(labels, known.failures)
        return [success, last_success, projects, failures]

    def close(self) -> None:
        """Stop the fetch threads; scrapes waiting on a fetch answer at once, ``up 0``."""
        if self._planner is not None:
            self._planner.close()
        self._shared.close()
        for source in self._extra:
            source.close()

    def _fetch(self, target: Target, kind: TaskKind, deadline: Deadline) -> "Future[Collection]":
        return self._shared.get(
            (target, kind), lambda shared: self._load(target, kind, shared), deadline
        )

    def _load(self, target: Target, kind: TaskKind, deadline: Deadline) -> Collection:
        with self._lock:
            sync = self._syncs.get((target, kind))
        if sync is None:  # it went between the scrape's start and this fetch
            raise ApiError("invalid_response", "the target is no longer collected")
        return sync.collect(deadline)

    def _wait(
        self,
        target: Target,
        kind: TaskKind,
        future: "Future[Collection]",
        deadline: Deadline,
        started: float,
    ) -> TargetResult:
        try:
            error = future.exception(timeout=deadline.remaining())
        except FutureTimeout:  # the wait's own: a TimeoutError of the fetch's is returned
            return self._failed(target, kind, started, "timeout", "no answer within the deadline")
        if isinstance(error, ShutdownError):
            return self._failed(target, kind, started, "shutdown", str(error))
        if isinstance(error, ApiError):
            return self._failed(
                target, kind, started, error.reason, error.detail, request_id=error.request_id
            )
        if error is not None:  # a bug here must cost one target, not the whole scrape
            log.error(
                "collection failed unexpectedly",
                exc_info=error,
                extra={"fields": _fields(target, kind)},
            )
            return self._failed(target, kind, started, "internal_error", "see the traceback above")
        collection = future.result()
        with self._lock:
            self._last_success[target, kind] = collection.finished_at
        seconds = time.monotonic() - started
        log.debug(
            "collected", extra={"fields": {**_fields(target, kind), "duration_seconds": seconds}}
        )
        return TargetResult(target, seconds, collection)

    def _failed(
        self,
        target: Target,
        kind: TaskKind,
        started: float,
        reason: str,
        detail: str,
        *,
        request_id: str | None = None,
    ) -> TargetResult:
        seconds = time.monotonic() - started
        fields: dict[str, object] = {
            **_fields(target, kind),
            "reason": reason,
            "duration_seconds": seconds,
            "detail": detail,
        }
        if request_id is not None:  # what the provider's support asks for
            fields["request_id"] = request_id
        if tip := hint_for(detail, kind.action):  # the gateway's words do not say what to check
            fields["hint"] = tip
        log.warning("collection failed", extra={"fields": fields})
        return TargetResult(target, seconds, None, reason)

    def _families(self, kind: TaskKind, results: Sequence[TargetResult]) -> Iterator[Metric]:
        """``kind``'s families of ``results``, each filled when it is iterated (each row's
        last success is read now)."""
        with self._lock:
            rows = [
                TargetRow(
                    [result.target.project_label, result.target.platform],
                    result.seconds,
                    self._last_success.get((result.target, kind)),
                    result.collection,
                )
                for result in results
            ]
        return target_families(kind.families, self._cache_note(), rows)

    def _cache_note(self) -> str:
        if self._cache_seconds <= 0:
            return ""
        return f" Answers are reused for up to {go_float(self._cache_seconds)}s."


def _fields(target: Target, kind: TaskKind) -> dict[str, str]:
    return {"project_id": target.project_label, "platform": target.platform, "kind": kind.name}
