"""The quota sweeper: at most one sweep per interval, never waited on past a deadline, bounded.

Most tests drive the sweeper through a test double of its ``QuotaClient`` protocol
(``FakeQuotaApi``), the one mock in this file, to script slow, hung and failing calls;
everything else is real: real threads, real time (intervals and deadlines of a fraction
of a second), and the exposition compared byte for byte through prometheus_client's own
``generate_latest``. The last test sweeps an account of two projects on the simulator
with the real API client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pytest
import simdata
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.collection.quota_sweep import QuotaSweeper
from exporter.gateway.answers import DomainInfo, QuotaResponse
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.simulator.account import Project
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, Quota
from exporter.simulator.static import StaticDataset

NOW = 1_700_000_000.0
WAIT = 5.0  # bounds every wait of the test; nothing here should take more than a moment


@dataclass(frozen=True)
class Listing:
    """What the client's ``list_domains`` returns: the domains asked for and the total."""

    domains: list[DomainInfo]
    total: int


class FakeQuotaApi:
    """A stand-in for the API client's quota calls, counting calls and calls in flight.

    ``delay`` slows every call, ``slow`` (by project) the calls of one project; ``hang``
    makes every call wait until its deadline (as the real client's watchdog would end
    it); ``fail`` is raised by every call; ``used`` is the prefetch count submitted today,
    to tell one sweep's answers from the next's.
    """

    def __init__(self, domains: dict[str, list[str]]) -> None:
        self.domains = domains
        self.delay = 0.0
        self.slow: dict[str, float] = {}
        self.hang = False
        self.fail: Exception | None = None
        self.used = 7
        self.calls = 0
        self.listings = 0
        self.limits: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.project_in_flight: Counter[str] = Counter()
        self.max_project_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def list_domains(self, project_id: str, *, deadline: Deadline, limit: int) -> Listing:
        with self._call(deadline, project_id):
            self.listings += 1
            self.limits.append(limit)
            names = self.domains[project_id]
            infos = [DomainInfo(domain=name, domain_id=f"id-{name}") for name in names]
            return Listing(infos[:limit], len(infos))

    def domain_quota(self, project_id: str, domain_id: str, *, deadline: Deadline) -> QuotaResponse:
        with self._call(deadline, project_id):
            return QuotaResponse(
                ret_code=0,
                prefetch_quota=500,
                submit_prefetch_count=self.used,
                refresh_file_quota=700,
                submit_refresh_file=3,
                refresh_dir_quota=20,
                submit_refresh_dir=0,
            )

    def prefetch_enabled(self, project_id: str, domain_id: str, *, deadline: Deadline) -> bool:
        with self._call(deadline, project_id):
            return not domain_id.startswith("id-off")

    def _call(self, deadline: Deadline, project_id: str) -> _InFlight:
        return _InFlight(self, deadline, project_id)

    def enter(self, deadline: Deadline, project_id: str) -> None:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.project_in_flight[project_id] += 1
            self.max_project_in_flight[project_id] = max(
                self.max_project_in_flight[project_id], self.project_in_flight[project_id]
            )
        if self.hang:
            while not deadline.expired:
                time.sleep(0.005)
            raise ApiError("timeout", "no answer within the deadline")
        time.sleep(self.slow.get(project_id, self.delay))
        if self.fail is not None:
            raise self.fail

    def leave(self, project_id: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.project_in_flight[project_id] -= 1


class _InFlight:
    def __init__(self, api: FakeQuotaApi, deadline: Deadline, project_id: str) -> None:
        self._api = api
        self._deadline = deadline
        self._project_id = project_id

    def __enter__(self) -> None:
        try:
            self._api.enter(self._deadline, self._project_id)
        except BaseException:
            self._api.leave(self._project_id)
            raise

    def __exit__(self, *_: object) -> None:
        self._api.leave(self._project_id)


class Families(Collector):
    """A collector yielding given families, for ``generate_latest``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(families: Iterable[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(families))
    return generate_latest(registry).decode()


def samples(families: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def value(families: list[Metric], name: str, **labels: str) -> float | None:
    return samples(families).get((name, tuple(sorted(labels.items()))))


def names(families: list[Metric]) -> set[str]:
    return {name for name, _ in samples(families)}


QUOTA_SERIES = {"ucdn_domain_quota", "ucdn_domain_quota_used", "ucdn_domain_prefetch_enabled"}


@pytest.fixture
def sweepers() -> Iterator[list[QuotaSweeper]]:
    """Every sweeper a test makes, closed at its end."""
    made: list[QuotaSweeper] = []
    yield made
    for sweeper in made:
        sweeper.close()


def make(sweepers: list[QuotaSweeper], api: FakeQuotaApi, **options: object) -> QuotaSweeper:
    settings: dict[str, object] = {"interval": 60.0, "wall_clock": lambda: NOW, **options}
    sweeper = QuotaSweeper(api, list(api.domains), **settings)  # type: ignore[arg-type]
    sweepers.append(sweeper)
    return sweeper


def soon(seconds: float = WAIT) -> Deadline:
    return Deadline.after(seconds)


def eventually(sweeper: QuotaSweeper, check: Callable[[list[Metric]], bool]) -> list[Metric]:
    """Scrapes (which wait for no refresh) until ``check`` holds, for at most WAIT seconds."""
    give_up = time.monotonic() + WAIT
    while True:
        families = sweeper.families(soon(0.01))
        if check(families) or time.monotonic() > give_up:
            return families
        time.sleep(0.02)


def prefetch_used(families: list[Metric], project_id: str = "p1") -> float | None:
    return value(
        families,
        "ucdn_domain_quota_used",
        project_id=project_id,
        domain="a.example.com",
        kind="prefetch",
    )


def test_exposition_of_one_project_with_two_domains(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"": ["b.example.com", "off.example.com"]})
    text = exposition(make(sweepers, api).families(soon()))
    assert text == (
        "# HELP ucdn_domain_quota_up 1 when this project's last quota sweep succeeded, else 0.\n"
        "# TYPE ucdn_domain_quota_up gauge\n"
        'ucdn_domain_quota_up{project_id="default"} 1.0\n'
        "# HELP ucdn_domain_quota_last_success_timestamp_seconds Unix time at which this "
        "project's last successful quota sweep ended.\n"
        "# TYPE ucdn_domain_quota_last_success_timestamp_seconds gauge\n"
        'ucdn_domain_quota_last_success_timestamp_seconds{project_id="default"} 1.7e+09\n'
        "# HELP ucdn_domain_quota_domains_dropped Domains not swept: beyond the exporter's cap,"
        " or listed without a DomainId.\n"
        "# TYPE ucdn_domain_quota_domains_dropped gauge\n"
        'ucdn_domain_quota_domains_dropped{project_id="default"} 0.0\n'
        "# HELP ucdn_domain_quota A domain's daily quota, by kind.\n"
        "# TYPE ucdn_domain_quota gauge\n"
        'ucdn_domain_quota{domain="b.example.com",kind="prefetch",project_id="default"} 500.0\n'
        'ucdn_domain_quota{domain="b.example.com",kind="refresh_file",project_id="default"} 700.0\n'
        'ucdn_domain_quota{domain="b.example.com",kind="refresh_dir",project_id="default"} 20.0\n'
        'ucdn_domain_quota{domain="off.example.com",kind="prefetch",project_id="default"} 500.0\n'
        'ucdn_domain_quota{domain="off.example.com",kind="refresh_file",project_id="default"} '
        "700.0\n"
        'ucdn_domain_quota{domain="off.example.com",kind="refresh_dir",project_id="default"} 20.0\n'
        "# HELP ucdn_domain_quota_used What was submitted today against that quota.\n"
        "# TYPE ucdn_domain_quota_used gauge\n"
        'ucdn_domain_quota_used{domain="b.example.com",kind="prefetch",project_id="default"} 7.0\n'
        'ucdn_domain_quota_used{domain="b.example.com",kind="refresh_file",project_id="default"} '
        "3.0\n"
        'ucdn_domain_quota_used{domain="b.example.com",kind="refresh_dir",project_id="default"} '
        "0.0\n"
        'ucdn_domain_quota_used{domain="off.example.com",kind="prefetch",project_id="default"} '
        "7.0\n"
        'ucdn_domain_quota_used{domain="off.example.com",kind="refresh_file",project_id="default"} '
        "3.0\n"
        'ucdn_domain_quota_used{domain="off.example.com",kind="refresh_dir",project_id="default"} '
        "0.0\n"
        "# HELP ucdn_domain_prefetch_enabled 1 when prefetch is switched on.\n"
        "# TYPE ucdn_domain_prefetch_enabled gauge\n"
        'ucdn_domain_prefetch_enabled{domain="b.example.com",project_id="default"} 1.0\n'
        'ucdn_domain_prefetch_enabled{domain="off.example.com",project_id="default"} 0.0\n'
    )


@pytest.mark.e2e  # seconds on loopback by design
def test_a_scrape_within_the_interval_makes_no_call_and_one_after_it_sweeps_again(
    sweepers: list[QuotaSweeper],
) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com", "b.example.com"]})
    sweeper = make(sweepers, api, interval=1.0)
    sweeper.families(soon())
    assert api.calls == 1 + 2 * 2  # the list, then a quota and a switch per domain
    api.used = 8
    within = sweeper.families(soon())
    assert api.calls == 5
    assert prefetch_used(within) == 7
    time.sleep(1.1)
    # The scrape that starts the refresh answers with the last sweep's values at once;
    # a scrape after the refresh ends publishes it.
    assert prefetch_used(sweeper.families(soon())) == 7
    assert prefetch_used(eventually(sweeper, lambda f: prefetch_used(f) == 8)) == 8
    assert api.calls == 10


@pytest.mark.e2e  # seconds on loopback by design
def test_a_slow_sweep_never_holds_a_scrape_past_its_deadline(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    sweeper = make(sweepers, api, interval=0.3, sweep_seconds=5.0, wall_clock=time.time)
    last_success = "ucdn_domain_quota_last_success_timestamp_seconds"
    good_at = value(sweeper.families(soon()), last_success, project_id="p1")
    assert good_at is not None
    api.delay, api.used = 0.5, 9
    time.sleep(0.35)
    for _ in range(2):  # the scrape that starts the slow sweep, then one that finds it running
        started = time.monotonic()
        during = sweeper.families(soon(0.2))
        assert time.monotonic() - started < 0.1
        # The last good values, their timestamp, and up 1: the last finished sweep succeeded.
        assert value(during, "ucdn_domain_quota_up", project_id="p1") == 1
        assert prefetch_used(during) == 7
        assert value(during, last_success, project_id="p1") == good_at
    after = eventually(sweeper, lambda f: prefetch_used(f) != 7)
    assert prefetch_used(after) == 9
    assert (value(after, last_success, project_id="p1") or 0) > good_at


@pytest.mark.e2e  # seconds on loopback by design
def test_a_first_sweep_slower_than_the_deadline_publishes_up_0_and_nothing_else(
    sweepers: list[QuotaSweeper],
) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    api.delay = 0.3
    sweeper = make(sweepers, api)
    first = sweeper.families(soon(0.1))
    assert samples(first) == {("ucdn_domain_quota_up", (("project_id", "p1"),)): 0.0}
    # A later scrape waits for the first sweep (nothing good is known yet), within its deadline.
    later = sweeper.families(soon())
    assert value(later, "ucdn_domain_quota_up", project_id="p1") == 1
    assert api.listings == 1


def test_a_failed_sweep_is_up_0_drops_the_quota_series_and_keeps_the_last_success(
    sweepers: list[QuotaSweeper], caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    sweeper = make(sweepers, api, interval=0.2)
    assert names(sweeper.families(soon())) >= QUOTA_SERIES
    api.fail = ApiError("api_error", "RetCode 292: project does not exist", "req-1")
    time.sleep(0.25)
    with caplog.at_level(logging.WARNING, logger="exporter.collection.quota_sweep"):
        failed = eventually(sweeper, lambda f: not names(f) & QUOTA_SERIES)
    assert value(failed, "ucdn_domain_quota_up", project_id="p1") == 0
    assert not (QUOTA_SERIES | {"ucdn_domain_quota_domains_dropped"}) & names(failed)
    assert value(failed, "ucdn_domain_quota_last_success_timestamp_seconds", project_id="p1") == NOW
    record = next(r for r in caplog.records if r.getMessage() == "quota sweep failed")
    assert record.fields == {  # type: ignore[attr-defined]
        "project_id": "p1",
        "reason": "api_error",
        "detail": "RetCode 292: project does not exist",
        "request_id": "req-1",
    }
    api.fail = None
    assert names(eventually(sweeper, lambda f: names(f) >= QUOTA_SERIES)) >= QUOTA_SERIES


def test_a_bug_in_a_sweep_is_up_0_and_a_log_line_not_a_crash(
    sweepers: list[QuotaSweeper], caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"], "p2": ["b.example.com"]})
    api.fail = ZeroDivisionError("a bug")
    with caplog.at_level(logging.ERROR, logger="exporter.collection.quota_sweep"):
        families = make(sweepers, api).families(soon())
    assert value(families, "ucdn_domain_quota_up", project_id="p1") == 0
    assert value(families, "ucdn_domain_quota_up", project_id="p2") == 0
    assert [r.getMessage() for r in caplog.records] == ["quota sweep failed unexpectedly"] * 2


def test_a_sweep_that_outlives_its_own_deadline_fails(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    api.hang = True
    sweeper = make(sweepers, api, sweep_seconds=0.2)
    started = time.monotonic()
    families = sweeper.families(soon())  # the scrape could wait 5 s; the sweep gives up first
    assert time.monotonic() - started < 0.2 + 0.3
    assert samples(families) == {("ucdn_domain_quota_up", (("project_id", "p1"),)): 0.0}
    assert api.in_flight == 0


def test_domains_beyond_max_domains_are_counted_not_swept(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": [f"d{i}.example.com" for i in range(5)]})
    families = make(sweepers, api, max_domains=3).families(soon())
    assert api.limits == [3]
    assert value(families, "ucdn_domain_quota_domains_dropped", project_id="p1") == 2
    swept = {dict(labels)["domain"] for name, labels in samples(families) if name in QUOTA_SERIES}
    assert swept == {"d0.example.com", "d1.example.com", "d2.example.com"}
    assert api.calls == 1 + 2 * 3


def test_a_repeated_domain_name_is_published_once(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com", "a.example.com"]})
    families = make(sweepers, api).families(soon())
    enabled = [s for s in families[-1].samples if s.labels["domain"] == "a.example.com"]
    assert len(enabled) == 1


def test_each_projects_calls_in_flight_never_exceed_its_bound(
    sweepers: list[QuotaSweeper],
) -> None:
    domains = [f"d{i}.example.com" for i in range(20)]
    api = FakeQuotaApi({"p1": domains, "p2": domains, "p3": domains})
    api.delay = 0.01
    families = make(sweepers, api, max_parallel=3).families(soon())
    assert api.calls == 3 * (1 + 2 * 20)
    # Reached, so the calls do run in parallel, and never more; the projects side by side.
    assert api.max_project_in_flight == {"p1": 3, "p2": 3, "p3": 3}
    assert api.max_in_flight <= 3 * 3
    assert [value(families, "ucdn_domain_quota_up", project_id=p) for p in ("p1", "p2", "p3")] == [
        1,
        1,
        1,
    ]


def test_a_project_with_slow_calls_never_holds_back_another_projects_sweep(
    sweepers: list[QuotaSweeper],
) -> None:
    api = FakeQuotaApi(
        {"slow": [f"d{i}.example.com" for i in range(20)], "fast": ["a.example.com"]}
    )
    api.slow["slow"] = 0.5  # 41 calls, 2 at a time: some 10 s
    sweeper = make(sweepers, api, max_parallel=2)
    sweeper.families(soon(0.01), ["slow"])
    give_up = time.monotonic() + WAIT
    while api.project_in_flight["slow"] < 2 and time.monotonic() < give_up:
        time.sleep(0.01)
    assert api.project_in_flight["slow"] == 2  # its sweep holds every slot it has
    families = sweeper.families(soon(1.0), ["fast"])
    assert value(families, "ucdn_domain_quota_up", project_id="fast") == 1
    assert api.project_in_flight["slow"] == 2  # and still does


def test_concurrent_scrapes_share_one_sweep_of_a_project(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    api.delay = 0.1
    sweeper = make(sweepers, api)
    results: list[list[Metric]] = []
    threads = [
        threading.Thread(target=lambda: results.append(sweeper.families(soon()))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert api.listings == 1
    assert [value(r, "ucdn_domain_quota_up", project_id="p1") for r in results] == [1] * 4


def test_close_ends_a_hung_sweep_and_its_waiting_scrape_promptly(
    sweepers: list[QuotaSweeper],
) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    api.hang = True
    sweeper = make(sweepers, api, sweep_seconds=60.0)
    answered = threading.Event()

    def scrape() -> None:
        sweeper.families(soon(30.0))
        answered.set()

    threading.Thread(target=scrape, daemon=True).start()
    time.sleep(0.2)
    assert api.in_flight == 1
    started = time.monotonic()
    sweeper.close()
    assert answered.wait(1.0)
    deadline = time.monotonic() + 1.0
    while api.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.in_flight == 0
    assert time.monotonic() - started < 1.0
    # After close, a scrape starts nothing and still answers.
    assert value(sweeper.families(soon()), "ucdn_domain_quota_up", project_id="p1") == 0
    assert api.calls == 1


def test_interval_0_turns_quotas_off(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    sweeper = make(sweepers, api, interval=0)
    assert not sweeper.enabled
    assert sweeper.families(soon()) == []
    assert sweeper.describe() == []
    assert api.calls == 0


def test_describe_names_the_families_and_calls_nothing(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"]})
    described = make(sweepers, api).describe()
    assert [family.name for family in described] == [
        "ucdn_domain_quota_up",
        "ucdn_domain_quota_last_success_timestamp_seconds",
        "ucdn_domain_quota_domains_dropped",
        "ucdn_domain_quota",
        "ucdn_domain_quota_used",
        "ucdn_domain_prefetch_enabled",
    ]
    assert api.calls == 0


def test_families_of_chosen_projects_only(sweepers: list[QuotaSweeper]) -> None:
    api = FakeQuotaApi({"p1": ["a.example.com"], "p2": ["b.example.com"]})
    families = make(sweepers, api).families(soon(), ["p2", "unknown"])
    assert {dict(labels)["project_id"] for _, labels in samples(families)} == {"p2"}
    assert api.listings == 1


@pytest.mark.parametrize(
    "options",
    [{"interval": -1}, {"max_domains": 0}, {"max_parallel": 0}, {"sweep_seconds": 0}],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        QuotaSweeper(FakeQuotaApi({}), [], **options)  # type: ignore[arg-type]


def test_each_projects_quota_series_hold_exactly_its_own_domains(
    sweepers: list[QuotaSweeper],
) -> None:
    # The real client against the simulator of an account of two projects: the API lists
    # the whole account's domains unless asked by project, so a client that did not ask
    # would publish every domain under both projects (and fail the other's quota calls).
    world = StaticDataset(
        {},
        domains={
            "org-a": simdata.domains("org-a", "a1.example.com", "a2.example.com"),
            "org-b": simdata.domains("org-b", "b1.example.com"),
        },
        quotas={("org-b", "ucdn-org-b-1"): Quota(submit_prefetch_count=42)},
    )
    projects = [Project("org-a", "A", is_default=True), Project("org-b", "B")]
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, world, projects=projects) as gateway:
        client = ApiClient(gateway.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
        sweeper = QuotaSweeper(client, ["org-a", "org-b"], wall_clock=lambda: NOW)
        sweepers.append(sweeper)
        try:
            families = sweeper.families(soon())
        finally:
            sweeper.close()
            client.close()
    published: dict[str, set[str]] = {}
    for name, labels in samples(families):
        if name in QUOTA_SERIES:
            found = dict(labels)
            published.setdefault(found["project_id"], set()).add(found["domain"])
    assert published == {"org-a": {"a1.example.com", "a2.example.com"}, "org-b": {"b1.example.com"}}
    for project in ("org-a", "org-b"):
        assert value(families, "ucdn_domain_quota_up", project_id=project) == 1
    used = value(
        families,
        "ucdn_domain_quota_used",
        project_id="org-b",
        domain="b1.example.com",
        kind="prefetch",
    )
    assert used == 42
