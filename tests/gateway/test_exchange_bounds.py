"""The deadline bounds the whole exchange, failures are counted, and memory is bounded.

Against :mod:`hostile` gateways on loopback: an ``ApiClient`` in this process for the
transport's promises (the call returns by the deadline, the gateway sees the
connection closed, no thread of the client keeps working), and the exporter as a real
process for ``--once``, ``--check-config`` and its resident memory.
"""

import re
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from conftest import start_gateway
from faultkit import Exporter, exporter_args
from hostile import (
    Behaviour,
    HostileGateway,
    cut_mid_body,
    drip_chunk_size,
    drip_headers,
    drip_status_line,
    drip_trailers,
    flood_chunk_size,
    flood_continue,
    flood_trailers,
    full_pages,
    gzip_bomb,
    in_turn,
    nested_json,
    valid_answer,
)
from pydantic import SecretStr

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions

pytestmark = pytest.mark.e2e

DEADLINE = 1.5
MARGIN = 1.5  # a shared, noisy machine
TASK = {"TaskId": "t-1", "CreateTime": 1000, "Status": "success", "UrlLists": []}

HOLDERS = {
    "drip status line": drip_status_line,
    "drip headers": drip_headers,
    "drip chunk-size line": drip_chunk_size,
    "drip chunk trailers": drip_trailers,
    "flood 100 Continue": flood_continue,
    "flood trailers": flood_trailers,
}


def _client(gateway: HostileGateway, **options: Any) -> ApiClient:
    return ApiClient(gateway.url, "public", SecretStr("private"), options=ClientOptions(**options))


def _fetch(client: ApiClient, seconds: float = DEADLINE) -> tuple[ApiError, Deadline, float]:
    """Run one collection expected to fail: its error, its deadline and when it ended."""
    deadline = Deadline.after(seconds)
    with pytest.raises(ApiError) as raised:
        client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=deadline)
    return raised.value, deadline, time.monotonic()


def _cpu_over(seconds: float) -> float:
    """This process' CPU seconds (every thread) over ``seconds`` of wall time."""
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


@pytest.mark.parametrize("behaviour", list(HOLDERS.values()), ids=list(HOLDERS))
def test_a_held_exchange_ends_at_the_deadline_and_frees_everything(
    gateways: list[HostileGateway], behaviour: Callable[[], Behaviour]
) -> None:
    gateway = start_gateway(gateways, in_turn(behaviour(), valid_answer([TASK])))
    client = _client(gateway)
    try:
        error, deadline, ended = _fetch(client)
        assert error.reason == "timeout"
        assert ended <= deadline.at + MARGIN, f"returned {ended - deadline.at:.2f}s late"
        # Waited for longer than the bound: the gateway's thread may notice a close late on a
        # loaded machine, and when it closed is what the next line asserts.
        closed = gateway.connections[0].wait_closed(5.0)
        assert closed is not None, "the gateway never saw the connection closed"
        assert closed <= deadline.at + MARGIN, f"closed {closed - deadline.at:.2f}s late"
        # Nothing of the client still reads, parses or spins once the call returned.
        assert _cpu_over(1.0) < 0.3
        assert client.stats.snapshot()[PREFETCH_ACTION, "timeout"] == 1
        # The same client still works: the next connection gets a valid answer.
        window = client.fetch_tasks(
            "", is_dcdn=False, begin=0, end=1, deadline=Deadline.after(DEADLINE)
        )
        assert [task.task_id for task in window.tasks] == ["t-1"]
    finally:
        client.close()


@pytest.mark.parametrize("behaviour", list(HOLDERS.values()), ids=list(HOLDERS))
def test_a_held_exchange_ends_after_the_request_timeout_however_far_the_deadline(
    gateways: list[HostileGateway], behaviour: Callable[[], Behaviour]
) -> None:
    # The deadline is far; the exchange has a cap of its own, the request timeout, in total:
    # not per read (every byte comes well within it), and interim answers included.
    gateway = start_gateway(gateways, behaviour())
    client = _client(gateway, request_timeout=1.0)
    try:
        started = time.monotonic()
        error, _, ended = _fetch(client, 30.0)
        assert ended - started <= 1.0 + MARGIN, f"returned after {ended - started:.2f}s"
        assert (error.reason, error.detail) == (
            "timeout",
            "exchange not finished within 1.0s, connection closed",
        )
        closed = gateway.connections[0].wait_closed(5.0)
        assert closed is not None and closed - started <= 1.0 + MARGIN
        assert _cpu_over(1.0) < 0.3
    finally:
        client.close()


def test_every_page_thread_is_freed_when_parallel_pages_are_held(
    gateways: list[HostileGateway],
) -> None:
    gateway = start_gateway(gateways, in_turn(full_pages(urls_per_task=1), drip_headers()))
    client = _client(gateway, page_size=10, parallel_pages=4)
    try:
        error, deadline, ended = _fetch(client)
        assert error.reason == "timeout"
        assert ended <= deadline.at + MARGIN
        held = gateway.connections[1:]
        assert len(held) >= 2, "the pages after the first were not asked for in parallel"
        for connection in held:
            closed = connection.wait_closed(max(0.0, deadline.at + MARGIN - time.monotonic()))
            assert closed is not None and closed <= deadline.at + MARGIN
        assert _cpu_over(1.0) < 0.3
    finally:
        client.close()


def test_close_ends_a_request_in_flight_at_once(gateways: list[HostileGateway]) -> None:
    gateway = start_gateway(gateways, drip_headers())
    client = _client(gateway)
    errors: list[ApiError] = []

    def collect() -> None:
        try:
            client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=Deadline.after(60))
        except ApiError as error:
            errors.append(error)

    worker = threading.Thread(target=collect)
    worker.start()
    time.sleep(0.5)
    closing = time.monotonic()
    client.close()
    worker.join(MARGIN)
    assert not worker.is_alive(), "close() left the request running"
    assert [error.reason for error in errors] == ["timeout"]
    closed = gateway.connections[0].wait_closed(MARGIN)
    assert closed is not None and closed - closing <= MARGIN


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "close"])
def test_a_connection_cut_mid_body_is_retried(gateways: list[HostileGateway], reset: bool) -> None:
    gateway = start_gateway(gateways, in_turn(cut_mid_body(reset=reset), valid_answer([TASK])))
    client = _client(gateway)
    try:
        window = client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=Deadline.after(5))
    finally:
        client.close()
    assert [task.task_id for task in window.tasks] == ["t-1"]
    stats = client.stats.snapshot()
    assert (stats[PREFETCH_ACTION, "connection_error"], stats[PREFETCH_ACTION, "ok"]) == (1, 1)


def test_an_endless_chunk_size_line_is_cut_short_and_retried(
    gateways: list[HostileGateway],
) -> None:
    # Each line of the chunked framing is bounded (http.client's 64 KiB): the flood is not
    # read, and held, until the deadline, but ends the attempt as a broken answer at once.
    gateway = start_gateway(gateways, in_turn(flood_chunk_size(), valid_answer([TASK])))
    client = _client(gateway)
    try:
        window = client.fetch_tasks("", is_dcdn=False, begin=0, end=1, deadline=Deadline.after(5))
    finally:
        client.close()
    assert [task.task_id for task in window.tasks] == ["t-1"]
    stats = client.stats.snapshot()
    assert (stats[PREFETCH_ACTION, "connection_error"], stats[PREFETCH_ACTION, "ok"]) == (1, 1)


def test_a_compressed_answer_counts_decompressed_and_is_cut_at_the_cap(
    gateways: list[HostileGateway],
) -> None:
    # 64 MiB in some 64 KiB on the wire: decompressed a read at a time, each read counted,
    # so the answer cap ends it with a few MiB ever held, not the whole.
    gateway = start_gateway(gateways, gzip_bomb(64 * 1024 * 1024))
    client = _client(gateway, max_response_bytes=1024 * 1024, max_retries=0)
    tracemalloc.start()
    try:
        error, _, _ = _fetch(client, 10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    assert (error.reason, error.detail) == ("invalid_response", "answer exceeds 1048576 bytes")
    assert peak < 16 * 1024 * 1024, f"{peak / 2**20:.0f} MiB held while reading"


def test_deeply_nested_json_is_an_invalid_answer(gateways: list[HostileGateway]) -> None:
    gateway = start_gateway(gateways, nested_json(depth=100_000))
    client = _client(gateway)
    try:
        error, _, _ = _fetch(client, 5.0)
    finally:
        client.close()
    assert error.reason == "invalid_response"


def test_endless_pages_stop_at_the_collection_cap(gateways: list[HostileGateway]) -> None:
    gateway = start_gateway(gateways, full_pages(urls_per_task=5))
    cap = 2 * 1024 * 1024
    client = _client(gateway, page_size=50, parallel_pages=4, max_collection_bytes=cap)
    try:
        error, _, _ = _fetch(client, 20.0)
    finally:
        client.close()
    assert error.reason == "invalid_response"
    assert "max_collection_bytes" in error.detail
    page_bytes = 50 * 5 * 270  # about: 50 tasks of 5 URLs of some 270 bytes of JSON
    # The cap stops the reading: at most the pages in flight when it was crossed follow.
    assert len(gateway.connections) <= cap // page_bytes + 8


# ---------------------------------------------------------------------------
# The exporter as a process


def test_once_against_a_dripping_gateway_exits_within_its_deadline(
    gateways: list[HostileGateway],
) -> None:
    gateway = start_gateway(gateways, drip_headers())
    started = time.monotonic()
    exporter = Exporter(
        [*exporter_args(gateway.url), "--once", "--max-scrape-timeout-seconds", "2"]
    )
    code = exporter.wait_exit(timeout=2 + 5)
    assert time.monotonic() - started <= 2 + 5
    assert code == 1
    assert 'ucdn_prefetch_up{platform="cdn",project_id="default"} 0.0' in exporter.stdout
    assert "Traceback" not in exporter.stderr


@pytest.mark.parametrize(
    "behaviour", [drip_status_line(), nested_json(100_000)], ids=["drip", "nested"]
)
def test_check_config_against_a_hostile_gateway_exits_in_time_without_a_traceback(
    gateways: list[HostileGateway], behaviour: Behaviour
) -> None:
    gateway = start_gateway(gateways, behaviour)
    started = time.monotonic()
    exporter = Exporter(
        [*exporter_args(gateway.url), "--check-config", "--request-timeout-seconds", "2"]
    )
    code = exporter.wait_exit(timeout=2 + 5)
    assert time.monotonic() - started <= 2 + 5
    assert code == 1
    assert re.search(r"failed \((timeout|invalid_response):", exporter.stdout), exporter.stdout
    assert "Traceback" not in exporter.stderr + exporter.stdout


def test_rss_is_bounded_and_flat_over_failing_scrapes_of_endless_pages(
    gateways: list[HostileGateway],
) -> None:
    """Endless full pages with the default 32 MiB cap: each scrape fails; memory stays put.

    Before the fix one scrape of these pages peaked near 100 MB and each failing scrape
    left some 50 MB behind (121 -> 472 MB in the report): six scrapes reached 340 MB.
    """
    gateway = start_gateway(gateways, full_pages(urls_per_task=20, url_length=200))
    exporter = Exporter(exporter_args(gateway.url, "--log-level", "info")).wait_started()
    try:
        first = exporter.scrape(timeout_header=30, wait=40)
        assert first.up() == 0
        after_first = exporter.memory_mb()
        for _ in range(5):
            assert exporter.scrape(timeout_header=30, wait=40).up() == 0
        after_six = exporter.memory_mb()
        failures = exporter.failures(at_least=6)
    finally:
        exporter.stop()
    assert all("max_collection_bytes" in record.get("detail", "") for record in failures)
    assert after_first["VmHWM"] < 200, after_first  # the Kubernetes limit is 256Mi
    assert after_six["VmHWM"] < after_first["VmHWM"] + 40, (after_first, after_six)
    assert after_six["VmRSS"] < after_first["VmRSS"] + 40, (after_first, after_six)


# ---------------------------------------------------------------------------
# A shared fetch lives no longer than the scrapes waiting for it

SCRAPE_TIMEOUT = 3.0  # the header; the deadline is 0.5 s less


def test_a_gateway_dripping_its_first_connection_costs_one_scrape_only(
    gateways: list[HostileGateway],
) -> None:
    """The first connection's headers come a byte a second, every other connection answers.

    The first scrape's fetch is cut at that scrape's deadline, so the next scrape starts a
    fetch of its own, on a new connection, rather than joining one that reads for ever.
    """
    task = {**TASK, "CreateTime": int(time.time()) - 60}
    gateway = start_gateway(gateways, in_turn(drip_headers(1.0), valid_answer([task])))
    exporter = Exporter(exporter_args(gateway.url)).wait_started()
    try:
        first = exporter.scrape(timeout_header=SCRAPE_TIMEOUT)
        answered = time.monotonic()
        assert first.up() == 0
        closed = gateway.connections[0].wait_closed(5.0)
        assert closed is not None and closed <= answered + MARGIN, "the drip was still read"
        later = [exporter.scrape(timeout_header=SCRAPE_TIMEOUT) for _ in range(2)]
    finally:
        exporter.stop()
    assert [scrape.up() for scrape in later] == [1, 1]
    assert len(gateway.connections) == 3  # one request per scrape, the drip's never reused


@pytest.mark.parametrize(
    "behaviour", [flood_continue, flood_trailers], ids=["flood 100 Continue", "flood trailers"]
)
def test_nothing_of_a_collection_runs_once_its_scrape_has_answered(
    gateways: list[HostileGateway], behaviour: Callable[[], Behaviour]
) -> None:
    """A flood keeps a reader busy for as long as it reads: it must stop with the scrape."""
    gateway = start_gateway(gateways, behaviour())
    exporter = Exporter(exporter_args(gateway.url)).wait_started()
    try:
        scrape = exporter.scrape(timeout_header=SCRAPE_TIMEOUT)
        answered = time.monotonic()
        assert (scrape.status, scrape.up()) == (200, 0)
        # Every connection closed by the exporter once the scrape answered: nothing reads.
        for connection in gateway.connections:
            closed = connection.wait_closed(5.0)
            assert closed is not None and closed <= answered + MARGIN, "still reading"
        before = exporter.cpu_seconds()
        time.sleep(3.0)
        spent = exporter.cpu_seconds() - before
    finally:
        exporter.stop()
    assert spent < 0.2, f"{spent:.2f} CPU-seconds in the 3 s after the scrape answered"
