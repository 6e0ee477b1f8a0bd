"""Each project's domain quotas and prefetch switches, swept in the background now and then.

Quotas change only when someone submits work, and they cost two calls per domain, so
they are not fetched on every scrape: a scrape that finds a project's sweep due starts
one in the background (one per project at a time) and serves what the last sweep found.
A scrape waits for a sweep, within its own deadline, only while the project has no
finished sweep yet (the first scrape); otherwise it answers at once with what the last
finished sweep found, and a refresh shows from the next scrape after it ends.

What a scrape publishes for a project follows the last *finished* sweep:

- it succeeded: ``up 1`` and its quotas, use, switches and dropped-domain count, even
  while the next sweep runs (``last_success_timestamp_seconds`` says how old they are);
- it failed (an API error, its own deadline, a bug): ``up 0`` and no quota series at all
  until a sweep succeeds again, so nothing stale passes for fresh; the last success's
  timestamp stays, so ``time() - last_success`` shows the age of the last good answer;
- none has finished yet (the first sweep outlived the first scrape's deadline): ``up 0``
  and no other series.

With background collection (``max_sweeps`` above 0) no scrape starts or waits for a
sweep: the planner's :meth:`QuotaSweeper.tick` starts the due ones, at most
``max_sweeps`` at once, every project's calls on one shared pool, within the requests per
second the planner leaves them: the interval stretches until a round of every project's
sweep fits (:meth:`QuotaSweeper.interval_for`), and sweeps start no faster than that
budget pays for their calls, so that a first round does not crowd out the targets. A
quota figure is then at most that interval plus a sweep old.

Each project's calls in flight are bounded by a pool of ``max_parallel`` threads of its
own, so that a project whose calls are slow never holds back another's sweep; a sweep runs
on a deadline of its own, so a hung gateway never pins a thread for longer, and
:meth:`QuotaSweeper.close` ends every sweep and wait at once.
"""

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, InvalidStateError, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collection.singleflight import ShutdownError
from exporter.gateway.answers import DomainInfo, QuotaResponse
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.metrics import QUOTA_FAMILIES
from exporter.settings.config import setting_default
from exporter.settings.target import DEFAULT_PROJECT_LABEL
from exporter.summary.labels import bounded_label_value

# The daily quotas of a domain, as its ``kind`` label names them.
QUOTAS = ("prefetch", "refresh_file", "refresh_dir")
# How long past its deadline a sweep waits for its calls to notice and end.
_GRACE_SECONDS = 1.0
# With background collection, the share of the request budget the sweeps always keep,
# however much the targets need.
SWEEP_FLOOR = 0.1
# The calls a project's sweep is reckoned to cost before one has finished: the domain
# list and one domain's two calls.
_FIRST_SWEEP_CALLS = 3
log = logging.getLogger(__name__)
T = TypeVar("T")


class DomainListing(Protocol):
    """One project's domains, as many as were asked for, and how many the project has."""

    @property
    def domains(self) -> Sequence[DomainInfo]:
        """The domains returned, at most the ``limit`` asked for."""

    @property
    def total(self) -> int:
        """The project's whole count of domains (``TotalCount``)."""


class QuotaClient(Protocol):
    """The three API calls a sweep makes; :class:`~exporter.gateway.api_client.ApiClient`
    provides them."""

    def list_domains(self, project_id: str, *, deadline: Deadline, limit: int) -> DomainListing:
        """Up to ``limit`` of the project's domains, every page of them."""

    def domain_quota(self, project_id: str, domain_id: str, *, deadline: Deadline) -> QuotaResponse:
        """One domain's daily quotas and what was submitted today."""

    def prefetch_enabled(self, project_id: str, domain_id: str, *, deadline: Deadline) -> bool:
        """Whether prefetch is switched on for one domain."""


class SweepTimeoutError(Exception):
    """A sweep's calls were not all answered within the sweep's own deadline."""


@dataclass(frozen=True)
class DomainQuota:
    """One domain's quotas, use and prefetch switch, as one sweep found them."""

    domain: str
    quota: QuotaResponse
    prefetch_enabled: bool

    def by_quota(self) -> dict[str, tuple[int, int]]:
        """``(quota, used)`` for each of :data:`QUOTAS`."""
        q = self.quota
        return {
            "prefetch": (q.prefetch_quota, q.submit_prefetch_count),
            "refresh_file": (q.refresh_file_quota, q.submit_refresh_file),
            "refresh_dir": (q.refresh_dir_quota, q.submit_refresh_dir),
        }


@dataclass(frozen=True)
class Sweep:
    """A successful sweep of one project: its domains, those beyond the cap, when it ended."""

    domains: tuple[DomainQuota, ...]
    dropped: int
    finished_at: float


@dataclass
class _Project:
    """What the scrapes know of one project; changed only under the sweeper's lock."""

    project_id: str
    client: QuotaClient
    good: Sweep | None = None  # the last sweep's result, None when it failed
    finished_once: bool = False
    last_success: float | None = None
    running: "Future[None] | None" = None
    next_due: float = -math.inf  # monotonic time at which a new sweep may start
    reckoned: float = 0.0  # the calls its running sweep was reckoned to cost

    @property
    def label(self) -> str:
        """The ``project_id`` label value, as the collector writes it."""
        return self.project_id or DEFAULT_PROJECT_LABEL


class _Families:
    """One scrape's quota families, in exposition order."""

    def __init__(self) -> None:
        self.up = QUOTA_FAMILIES.up.new(GaugeMetricFamily)
        self.last_success = QUOTA_FAMILIES.last_success.new(GaugeMetricFamily)
        self.dropped = QUOTA_FAMILIES.domains_dropped.new(GaugeMetricFamily)
        self.quota = QUOTA_FAMILIES.quota.new(GaugeMetricFamily)
        self.used = QUOTA_FAMILIES.used.new(GaugeMetricFamily)
        self.enabled = QUOTA_FAMILIES.prefetch_enabled.new(GaugeMetricFamily)

    def all(self) -> list[Metric]:
        """Every family, in exposition order."""
        return [self.up, self.last_success, self.dropped, self.quota, self.used, self.enabled]

    def add(self, project: _Project) -> None:
        """One project's samples: health always, figures only from a good last sweep."""
        labels = [project.label]
        self.up.add_metric(labels, 1 if project.good else 0)
        if project.last_success is not None:
            self.last_success.add_metric(labels, project.last_success)
        if project.good is None:
            return
        self.dropped.add_metric(labels, project.good.dropped)
        for domain in sorted(project.good.domains, key=lambda d: d.domain):
            for name, (quota, used) in domain.by_quota().items():
                self.quota.add_metric([*labels, domain.domain, name], quota)
                self.used.add_metric([*labels, domain.domain, name], used)
            self.enabled.add_metric([*labels, domain.domain], 1 if domain.prefetch_enabled else 0)


class QuotaSweeper:
    """Sweeps every project's domain quotas in the background; scrapes read the results.

    A scrape of one project with one domain yields::

        # HELP ucdn_domain_quota_up 1 when this project's last quota sweep succeeded, else 0.
        # TYPE ucdn_domain_quota_up gauge
        ucdn_domain_quota_up{project_id="default"} 1.0
        ...
        ucdn_domain_quota{domain="a.example.com",kind="prefetch",project_id="default"} 500.0
        ucdn_domain_prefetch_enabled{domain="a.example.com",project_id="default"} 1.0

    ``interval`` 0 turns quotas off: no calls, no families. ``sweep_seconds`` (default:
    the interval) is each sweep's own deadline. ``clock`` is monotonic (due times and
    deadlines), ``wall_clock`` the Unix time published.
    """

    def __init__(
        self,
        client: QuotaClient,
        project_ids: Sequence[str],
        *,
        interval: float = 300.0,
        max_domains: int = 500,
        max_parallel: int = 4,
        max_label_value_length: int = setting_default("max_label_value_length"),
        sweep_seconds: float | None = None,
        max_sweeps: int = 0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0 or max_domains < 1 or max_parallel < 1:
            raise ValueError("interval must be >= 0, max_domains and max_parallel >= 1")
        if max_sweeps < 0:
            raise ValueError("max_sweeps must be >= 0")
        if sweep_seconds is not None and sweep_seconds <= 0:
            raise ValueError("sweep_seconds must be > 0")
        self._interval = interval
        self._max_domains = max_domains
        self._max_label_value_length = max_label_value_length
        self._sweep_seconds = sweep_seconds or interval
        self._wall_clock = wall_clock
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._max_parallel = max_parallel
        self._projects: dict[str, _Project] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._max_sweeps = max_sweeps
        self._next_start = -math.inf  # monotonic: the budget has paid for the last start
        self._sweep_rate = 0.0  # the sweeps' budget at the last tick
        # Background collection: every project's calls on one pool, bounded whatever the count.
        self._shared_pool = (
            ThreadPoolExecutor(max_sweeps * max_parallel, thread_name_prefix="quota")
            if max_sweeps
            else None
        )
        # dict.fromkeys: each project once, in the order given.
        self.follow(dict.fromkeys(project_ids, client))

    @property
    def enabled(self) -> bool:
        """Whether quotas are swept at all (``interval`` > 0)."""
        return self._interval > 0

    def describe(self) -> list[Metric]:
        """The families without samples (none when quotas are off): registering calls nothing."""
        return _Families().all() if self.enabled else []

    def families(
        self, deadline: Deadline, project_ids: Iterable[str] | None = None
    ) -> list[Metric]:
        """The quota families of every project (or of ``project_ids``), by ``deadline``."""
        if not self.enabled:
            return []
        waits: list[Future[None]] = []
        with self._lock:
            chosen = self._choose(project_ids)
            for project in chosen if not self._max_sweeps else ():
                self._start_if_due(project)
                # Only a project with nothing to show is waited for: a refresh is published
                # by the next scrape rather than costing this one its deadline.
                if project.running is not None and not project.finished_once:
                    waits.append(project.running)
        if waits:
            wait(waits, timeout=deadline.remaining())
        families = _Families()
        with self._lock:
            for project in chosen:
                families.add(project)
        return families.all()

    def interval_for(self, requests_per_second: float) -> float:
        """The seconds between two sweeps of a project when the sweeps may spend
        ``requests_per_second`` (0: no limit): the configured interval, or longer, so that
        a round of every project's sweep fits in that budget."""
        if requests_per_second <= 0:
            return self._interval
        with self._lock:
            typical = self._typical_calls()
            calls = sum(_calls_of(project, typical) for project in self._projects.values())
        return max(self._interval, calls / requests_per_second)

    def tick(self, requests_per_second: float) -> None:
        """Background collection: start due sweeps, longest due first, while fewer than
        ``max_sweeps`` run and the sweeps' budget of ``requests_per_second`` (0: no
        limit) has paid for the calls of the last one started; each project at
        :meth:`interval_for` that budget."""
        if not self.enabled or not self._max_sweeps:
            return
        interval = self.interval_for(requests_per_second)
        with self._lock:
            self._sweep_rate = requests_per_second
            typical = self._typical_calls()
            running = sum(1 for p in self._projects.values() if p.running is not None)
            for project in sorted(self._projects.values(), key=lambda p: p.next_due):
                now = self._clock()
                paid = requests_per_second <= 0 or now >= self._next_start
                if running >= self._max_sweeps or not paid:
                    break
                if self._start_if_due(project, interval):
                    running += 1
                    if requests_per_second > 0:
                        project.reckoned = _calls_of(project, typical)
                        self._next_start = now + project.reckoned / requests_per_second

    def close(self) -> None:
        """Start no more sweeps; end running ones and every scrape waiting on them at once."""
        self._closed.set()
        with self._lock:
            running = [p.running for p in self._projects.values() if p.running is not None]
            pools = list(self._pools.values())
        if self._shared_pool is not None:
            pools.append(self._shared_pool)
        for future in running:
            _settle(future)
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)

    def follow(self, projects: Mapping[str, QuotaClient]) -> None:
        """Sweep ``projects`` from now on, each through its client: a new project is swept
        from the next scrape, one no longer given loses its series (a sweep of it under
        way ends by its deadline, its result unread)."""
        with self._lock:
            for pid in [pid for pid in self._projects if pid not in projects]:
                del self._projects[pid]
                if self._shared_pool is None:
                    self._pools.pop(pid).shutdown(wait=False, cancel_futures=True)
            for pid, client in projects.items():
                known = self._projects.get(pid)
                if known is not None:
                    known.client = client
                    continue
                project = _Project(pid, client)
                self._projects[pid] = project
                if self._shared_pool is not None:
                    continue
                self._pools[pid] = ThreadPoolExecutor(
                    self._max_parallel, thread_name_prefix=f"quota-{project.label}"
                )

    def _choose(self, project_ids: Iterable[str] | None) -> list[_Project]:
        if project_ids is None:
            return list(self._projects.values())
        return [self._projects[pid] for pid in dict.fromkeys(project_ids) if pid in self._projects]

    def _start_if_due(self, project: _Project, interval: float | None = None) -> bool:
        """Start a sweep of ``project`` if none runs and its interval has passed, the next
        due ``interval`` (default: the configured one) later (under lock)."""
        now = self._clock()
        if self._closed.is_set() or project.running is not None or now < project.next_due:
            return False
        project.next_due = now + (self._interval if interval is None else interval)
        project.running = Future()
        deadline = Deadline.after(self._sweep_seconds, self._sweep_clock)
        thread = threading.Thread(
            target=self._run,
            args=(project, self._pool_of(project), project.running, deadline),
            name=f"quota-sweep-{project.label}",
            daemon=True,  # a sweep must never hold up the process' exit
        )
        thread.start()
        return True

    def _typical_calls(self) -> float:
        """What a project's sweep costs on average, as far as sweeps have found (under
        the lock); before any, :data:`_FIRST_SWEEP_CALLS`."""
        swept = [_calls_of_sweep(p.good) for p in self._projects.values() if p.good is not None]
        return sum(swept) / len(swept) if swept else _FIRST_SWEEP_CALLS

    def _pool_of(self, project: _Project) -> ThreadPoolExecutor:
        return self._shared_pool or self._pools[project.project_id]

    def _sweep_clock(self) -> float:
        """Monotonic time, but past every deadline once closed: sweeps then end at once."""
        return math.inf if self._closed.is_set() else self._clock()

    def _run(
        self,
        project: _Project,
        pool: ThreadPoolExecutor,
        done: "Future[None]",
        deadline: Deadline,
    ) -> None:
        sweep: Sweep | None = None
        try:
            sweep = self._sweep(project, pool, deadline)
        except BaseException as error:  # whatever it is, it costs this project's up, not a thread
            _log_failure(project.label, error)
        with self._lock:
            project.running = None
            if sweep is not None and self._sweep_rate > 0:
                # What the sweep cost past its reckoning is paid for by the next start.
                extra = _calls_of_sweep(sweep) - project.reckoned
                self._next_start += max(0, extra) / self._sweep_rate
            project.finished_once = True
            project.good = sweep
            if sweep is not None:
                project.last_success = sweep.finished_at
        _settle(done)

    def _sweep(self, project: _Project, pool: ThreadPoolExecutor, deadline: Deadline) -> Sweep:
        project_id, client = project.project_id, project.client
        listing = self._call_all(
            pool,
            [lambda: client.list_domains(project_id, deadline=deadline, limit=self._max_domains)],
            deadline,
        )[0]
        kept = list(listing.domains)[: self._max_domains]
        # A repeated name would repeat series, which makes Prometheus reject the scrape; a
        # name is its label value, bounded like every label value.
        first_of_name: dict[str, DomainInfo] = {}
        for info in kept:
            name = bounded_label_value(info.domain, self._max_label_value_length)
            first_of_name.setdefault(name, info)
        calls = [
            self._domain_call(client, project_id, *named, deadline)
            for named in first_of_name.items()
        ]
        domains = self._call_all(pool, calls, deadline)
        dropped = max(0, listing.total - len(kept))
        return Sweep(tuple(domains), dropped, self._wall_clock())

    @staticmethod
    def _domain_call(
        client: QuotaClient, project_id: str, name: str, info: DomainInfo, deadline: Deadline
    ) -> Callable[[], DomainQuota]:
        """One domain's two calls, as one task of the pool: they fill one slot in turn."""

        def call() -> DomainQuota:
            quota = client.domain_quota(project_id, info.domain_id, deadline=deadline)
            enabled = client.prefetch_enabled(project_id, info.domain_id, deadline=deadline)
            return DomainQuota(name, quota, bool(enabled))

        return call

    def _call_all(
        self, pool: ThreadPoolExecutor, calls: Sequence[Callable[[], T]], deadline: Deadline
    ) -> list[T]:
        """Every call's answer, in order, run on the project's ``pool``; the first error raises.

        Whatever happens, returns only once none of these calls runs any more (they end
        by ``deadline``, give or take a moment), so two sweeps of a project never overlap;
        after :meth:`close`, at once.
        """
        if self._closed.is_set():
            raise ShutdownError("the exporter is shutting down")
        try:
            futures = [pool.submit(call) for call in calls]
        except RuntimeError:  # the pool was shut down by close()
            raise ShutdownError("the exporter is shutting down") from None
        try:
            done, pending = wait(futures, timeout=deadline.remaining(), return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if isinstance(error, ApiError):
                    raise error.detached()  # not bound to this frame: no cycle through it
                if error is not None:
                    raise error
            if self._closed.is_set():
                raise ShutdownError("the exporter is shutting down")
            if pending:
                raise SweepTimeoutError("not every call was answered within the sweep's deadline")
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()
            # A call ends at the deadline, but may need a moment to notice; after close()
            # nobody waits for it.
            grace = 0.0 if self._closed.is_set() else _GRACE_SECONDS
            wait(futures, timeout=deadline.remaining() + grace)


def _calls_of(project: _Project, typical: float) -> float:
    """The calls ``project``'s next sweep is reckoned to cost: its last good one's, else
    ``typical``."""
    return typical if project.good is None else _calls_of_sweep(project.good)


def _calls_of_sweep(sweep: Sweep) -> int:
    """The calls a sweep made: the domain list and two per domain."""
    return 1 + 2 * len(sweep.domains)


def _log_failure(label: str, error: BaseException) -> None:
    """One log line for a failed sweep; client errors are already free of secrets."""
    fields: dict[str, object] = {"project_id": label}
    if isinstance(error, ApiError):
        fields |= {"reason": error.reason, "detail": error.detail}
        if error.request_id is not None:
            fields["request_id"] = error.request_id
    elif isinstance(error, SweepTimeoutError | ShutdownError):
        fields |= {"reason": "timeout" if isinstance(error, SweepTimeoutError) else "shutdown"}
        fields["detail"] = str(error)
    else:  # a bug: the traceback, for a person to read (logs.py redacts secrets as ever)
        log.error("quota sweep failed unexpectedly", exc_info=error, extra={"fields": fields})
        return
    log.warning("quota sweep failed", extra={"fields": fields})


def _settle(future: "Future[None]") -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_result(None)
