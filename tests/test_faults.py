"""Upstream faults against the exporter as a process: every scrape answers 200 in time.

Each test starts the simulator on loopback, makes it misbehave (slow, dripping,
503 with Retry-After, resets, refusals, 5xx, bad JSON, HTML, RetCode, wrong types,
oversized bodies, pages without end), starts ``python -m exporter`` against it and
scrapes ``/metrics`` the way Prometheus does. It checks what Prometheus and an
operator see: the status, how long the answer took (only "did not hang" bounds),
``ucdn_prefetch_up``, the ``outcome`` counted, the attempts the gateway received and
the one log line per failed collection. At teardown, the canary private key and every
signature the simulator received must be absent from all output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from faultkit import (
    CANARY,
    NOW,
    Exporter,
    Scrape,
    assert_no_secret,
    closed_port_url,
    exporter_args,
    signatures,
    simulator,
)
from simanswers import WrongTypes
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.simulator.static import generate_tasks

pytestmark = pytest.mark.e2e

SCRAPE_TIMEOUT = 2.0  # the header Prometheus sends; the deadline is 1.5 s with the 0.5 s offset
DID_NOT_HANG = 3.5  # generous: a 2 s scrape timeout must never take this long
MAX_RETRIES = 2

StartExporter = Callable[..., Exporter]


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    upstream = simulator()
    yield upstream
    upstream.stop()


@pytest.fixture
def start(api: SimulatedApi) -> Iterator[StartExporter]:
    """Start exporters against ``api``; at teardown stop them and check nothing leaked."""
    started: list[Exporter] = []

    def run(*extra: str, api_url: str | None = None) -> Exporter:
        args = exporter_args(api_url or api.url, "--max-retries", str(MAX_RETRIES), *extra)
        exporter = Exporter(args)
        started.append(exporter)
        return exporter.wait_started()

    yield run
    for exporter in started:
        exporter.stop()
        assert not exporter.killed, "the exporter ignored SIGTERM"
    secrets = {CANARY, *signatures(api)}
    for exporter in started:
        for where, text in exporter.all_output():
            assert_no_secret(where, text, secrets)


def scrape_until(
    exporter: Exporter, check: Callable[[Scrape], bool], within: float = 5.0
) -> Scrape:
    """Scrape until ``check`` holds: a request that ran out of time may be counted just after
    the scrape that gave up on it answered, so the counter shows up on a later scrape."""
    give_up = time.monotonic() + within
    while True:
        scrape = exporter.scrape()
        if check(scrape) or time.monotonic() > give_up:
            return scrape
        time.sleep(0.1)


def assert_failed_in_time(scrape: Scrape) -> None:
    assert scrape.status == 200
    assert scrape.seconds < DID_NOT_HANG
    assert scrape.up() == 0.0
    # No stale figures are published as fresh for a failed target.
    assert scrape.value("ucdn_prefetch_tasks", status="success") is None


def the_failure(exporter: Exporter) -> dict[str, str]:
    """The one log line a failed collection writes, with its reason and duration."""
    failures = exporter.failures(at_least=1)
    assert len(failures) >= 1, exporter.stderr
    record = failures[0]
    assert record["level"] == "warning"
    assert float(record["duration_seconds"]) < DID_NOT_HANG
    return record


def test_a_healthy_upstream_is_up_and_logs_nothing_above_debug(start: StartExporter) -> None:
    exporter = start()
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert scrape.status == 200
    assert scrape.up() == 1.0
    assert scrape.value("ucdn_prefetch_tasks", status="success") is not None
    assert scrape.outcome("ok") == 1.0
    exporter.stop()
    after_start = [r for r in exporter.log_records() if r.get("msg") not in ("started", "stopping")]
    loud = [r for r in after_start if r.get("level") != "debug" and "listening" not in r["msg"]]
    assert loud == []


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(lambda api: api.faults.delay(5), id="slow-5s"),
        pytest.param(lambda api: api.faults.drip(1), id="drip-1-byte-per-s"),
        pytest.param(lambda api: api.faults.hang(), id="hang"),
    ],
)
def test_no_answer_in_time_is_a_timeout_within_the_deadline(
    api: SimulatedApi, start: StartExporter, inject: Callable[[SimulatedApi], None]
) -> None:
    # A shared fetch runs on the scrape cap, not on the scrape's deadline: with the cap at
    # the scrape's deadline, the request itself runs out of time and is counted a timeout.
    exporter = start("--max-scrape-timeout-seconds", str(SCRAPE_TIMEOUT - 0.5))
    inject(api)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert the_failure(exporter)["reason"] == "timeout"
    # A timeout is not retried: there is no time left to retry in.
    assert api.request_count() == 1
    api.faults.clear()
    later = scrape_until(exporter, lambda s: s.outcome("timeout") >= 1 and s.up() == 1.0)
    assert later.outcome("timeout") == 1.0
    assert later.up() == 1.0, "the exporter recovers once the upstream does"


def test_a_dripped_body_is_cut_off_at_the_deadline_even_with_a_long_request_timeout(
    api: SimulatedApi, start: StartExporter
) -> None:
    # Each byte comes within the socket read timeout: only the body deadline can stop it.
    exporter = start("--request-timeout-seconds", "60")
    api.faults.drip(4)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert the_failure(exporter)["reason"] == "timeout"


def test_503_with_a_retry_after_of_an_hour_ends_within_the_deadline(
    api: SimulatedApi, start: StartExporter
) -> None:
    exporter = start()
    api.faults.http_error(503, retry_after="3600")
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert scrape.outcome("http_error") >= 1
    assert 1 <= api.request_count() <= MAX_RETRIES + 1
    assert the_failure(exporter)["reason"] == "http_error"


def test_a_short_retry_after_is_honoured_then_the_retry_succeeds(
    api: SimulatedApi, start: StartExporter
) -> None:
    exporter = start()
    api.faults.http_error(429, retry_after="1", times=1)
    scrape = exporter.scrape(5)
    assert scrape.status == 200
    assert scrape.up() == 1.0
    assert scrape.outcome("http_error") == 1.0
    assert scrape.outcome("ok") == 1.0
    gap = api.requests[1].received - api.requests[0].received
    assert gap >= 0.9, "the retry came before Retry-After said it may"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_a_bounded_number_of_times(
    api: SimulatedApi, start: StartExporter, status: int
) -> None:
    exporter = start()
    api.faults.http_error(status)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert api.request_count() == MAX_RETRIES + 1
    assert scrape.outcome("http_error") == MAX_RETRIES + 1
    assert the_failure(exporter)["reason"] == "http_error"


@pytest.mark.parametrize("status", [301, 404])
def test_other_statuses_are_not_retried_nor_followed(
    api: SimulatedApi, start: StartExporter, status: int
) -> None:
    exporter = start()
    api.faults.http_error(status)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert api.request_count() == 1
    assert scrape.outcome("http_error") == 1.0


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(lambda api: api.faults.reset(), id="reset"),
        pytest.param(lambda api: api.faults.close_without_answer(), id="closed"),
    ],
)
def test_dropped_connections_are_retried_a_bounded_number_of_times(
    api: SimulatedApi, start: StartExporter, inject: Callable[[SimulatedApi], None]
) -> None:
    exporter = start()
    inject(api)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert api.request_count() == MAX_RETRIES + 1
    assert scrape.outcome("connection_error") == MAX_RETRIES + 1
    assert the_failure(exporter)["reason"] == "connection_error"


def test_a_refused_connection_is_retried_a_bounded_number_of_times(start: StartExporter) -> None:
    exporter = start(api_url=closed_port_url())
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert scrape.outcome("connection_error") == MAX_RETRIES + 1
    assert the_failure(exporter)["reason"] == "connection_error"


def test_a_one_off_reset_is_retried_and_the_target_is_up(
    api: SimulatedApi, start: StartExporter
) -> None:
    exporter = start()
    api.faults.reset(times=1)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert scrape.up() == 1.0
    assert scrape.outcome("connection_error") == 1.0
    assert api.request_count() == 2
    assert exporter.failures() == []


BAD_ANSWERS: list[tuple[str, Callable[[SimulatedApi], None], str]] = [
    ("bad-json", lambda api: api.faults.bad_json(), "invalid_response"),
    ("html-login-page", lambda api: api.faults.html_page(), "invalid_response"),
    ("retcode-171", lambda api: api.faults.ret_code(171, "Signature VerifyAC Error"), "api_error"),
    *[
        (f"wrong-types-{variant}", lambda api, v=variant: api.faults.wrong_types(v), reason)
        for variant, reason in (
            ("task_list_string", "invalid_response"),
            ("progress_string", "invalid_response"),
            ("null_fields", "invalid_response"),
            # 10**20 and more: past the gateway's 64-bit integers
            ("huge_numbers", "invalid_response"),
        )
    ],
]


@pytest.mark.parametrize(
    ("inject", "reason"),
    [pytest.param(inject, reason, id=name) for name, inject, reason in BAD_ANSWERS],
)
def test_a_malformed_answer_is_up_0_with_its_outcome_counted(
    api: SimulatedApi, start: StartExporter, inject: Callable[[SimulatedApi], None], reason: str
) -> None:
    exporter = start()
    inject(api)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    assert scrape.outcome(reason) == 1.0
    assert scrape.outcome("ok") == 0.0
    assert api.request_count() == 1, "a malformed answer is not retried"
    assert the_failure(exporter)["reason"] == reason


@pytest.mark.parametrize("variant", ["negative_times", "missing_fields"], ids=str)
def test_odd_but_well_typed_values_are_counted_as_anomalies(
    api: SimulatedApi, start: StartExporter, variant: WrongTypes
) -> None:
    exporter = start()
    api.faults.wrong_types(variant)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert scrape.status == 200
    assert scrape.up() == 1.0
    assert sum(scrape.value("ucdn_prefetch_tasks", status=s) or 0 for s in _STATUSES) == 12
    anomalies = [
        value
        for (name, _), value in scrape.samples().items()
        if name == "ucdn_prefetch_records_invalid"
    ]
    assert anomalies and all(value >= 0 for value in anomalies)
    assert sum(anomalies) > 0, "the oddities are counted, not silently absorbed"


_STATUSES = ("success", "wait", "process", "failure", "unknown")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_an_oversized_body_is_invalid_and_not_read_to_the_end(
    api: SimulatedApi, start: StartExporter, declared: bool
) -> None:
    exporter = start("--max-response-bytes", "65536")
    api.faults.oversized(200 * 1024 * 1024, content_length=declared)
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    # 200 MiB at loopback speed would take longer than the deadline: reading stopped at the cap.
    assert_failed_in_time(scrape)
    assert scrape.outcome("invalid_response") == 1.0
    failure = the_failure(exporter)
    assert failure["reason"] == "invalid_response"
    assert "65536" in failure["detail"], failure  # the cap is named, not just "ApiError"


def test_pages_without_end_stop_at_the_page_cap(start: StartExporter) -> None:
    # Full pages for as long as the client asks, and a TotalCount promising more still.
    api = simulator(generate_tasks(60, 1, now=NOW))
    api.total_count_error = 10**6
    try:
        exporter = start("--page-size", "5", "--max-pages", "4", api_url=api.url)
        scrape = exporter.scrape(SCRAPE_TIMEOUT)
        assert_failed_in_time(scrape)
        assert api.request_count() == 4, "no page is asked for past the cap"
        assert the_failure(exporter)["reason"] == "invalid_response"
        # Every request was answered well: the failure is the collection's, not a request's.
        assert scrape.outcome("ok") == 4.0
    finally:
        api.stop()
    for where, text in exporter.all_output():
        assert_no_secret(where, text, {CANARY, *signatures(api)})


def test_every_known_outcome_is_exported_at_zero_from_the_start(
    api: SimulatedApi, start: StartExporter
) -> None:
    exporter = start()
    scrape = exporter.scrape(path="metrics", timeout_header=SCRAPE_TIMEOUT)
    for outcome in (
        "http_error",
        "timeout",
        "connection_error",
        "api_error",
        "invalid_response",
        "rate_limited",
    ):
        assert scrape.outcome(outcome) == 0.0, outcome
    # The one outcome that happened counts exactly the requests the gateway answered.
    assert scrape.outcome("ok") == api.request_count(action=PREFETCH_ACTION) > 0


def test_a_lasting_rate_limit_is_retried_then_up_0_as_rate_limited(
    api: SimulatedApi, start: StartExporter
) -> None:
    api.faults.ret_code(153, "Request too frequently")
    exporter = start()
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert_failed_in_time(scrape)
    record = the_failure(exporter)
    assert record["reason"] == "rate_limited"
    assert record["detail"].startswith("RetCode 153")
    # Retried with back-off inside the deadline: more than one attempt, never more than allowed.
    assert 2 <= api.request_count() <= MAX_RETRIES + 1
    scrape = scrape_until(exporter, lambda s: s.outcome("rate_limited") == api.request_count())
    assert scrape.outcome("rate_limited") == api.request_count()
    assert scrape.outcome("api_error") == 0.0


def test_a_passing_rate_limit_costs_a_retry_not_the_target(
    api: SimulatedApi, start: StartExporter
) -> None:
    api.faults.ret_code(153, "Request too frequently", times=1)
    exporter = start()
    scrape = exporter.scrape(SCRAPE_TIMEOUT)
    assert scrape.status == 200
    assert scrape.up() == 1.0
    assert scrape.outcome("rate_limited") == 1.0
    assert scrape.outcome("ok") == 1.0
    assert exporter.failures() == []


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "fast"])
def test_a_bad_rate_limit_setting_exits_2_naming_it(value: str) -> None:
    for exporter in (
        Exporter(exporter_args(closed_port_url(), "--max-api-requests-per-second", value)),
        Exporter(
            exporter_args(closed_port_url()),
            env={"UCDN_EXPORTER_MAX_API_REQUESTS_PER_SECOND": value},
        ),
    ):
        assert exporter.wait_exit() == 2
        lines = exporter.stderr.strip().splitlines()
        assert len(lines) == 1, exporter.stderr
        assert "UCDN_EXPORTER_MAX_API_REQUESTS_PER_SECOND" in lines[0]
        assert "--max-api-requests-per-second" in lines[0]
        assert f": {value}" not in lines[0] and CANARY not in exporter.stderr


def test_the_rate_limit_spaces_the_pages_of_a_scrape(
    api: SimulatedApi, start: StartExporter
) -> None:
    exporter = start("--page-size", "2", "--max-api-requests-per-second", "5")
    scrape = exporter.scrape(10)
    assert scrape.up() == 1.0
    arrivals = sorted(request.received for request in api.requests)
    assert len(arrivals) == 7  # 12 tasks in pages of 2, and the short (empty) page
    assert arrivals[-1] - arrivals[0] >= 6 / 5 - 0.1
