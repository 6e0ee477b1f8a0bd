"""One collection's bounds hold for all it does, and a failed one gives its memory back.

Against :mod:`hostile` gateways on loopback. ``MAX_COLLECTION_BYTES`` counts every byte
read for a target in a collection, its lookups by TaskId as much as its pages (counted on
the gateway's side). A failed collection leaves nothing for the cycle collector: in
process, with the collector off, no frame of the exporter is found in a reference cycle
after collections failing every way a page can fail; and the exporter as a process,
with its cycle collector off, keeps a flat RSS over scrapes that fail at the byte cap.
"""

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import start_gateway
from faultkit import Exporter, exporter_args, without_cycle_collector
from hostile import (
    Behaviour,
    HostileGateway,
    Peer,
    cut_mid_body,
    drip_headers,
    full_pages,
    http_error,
    padded_lookups,
)
from pydantic import SecretStr

from exporter.collection.kinds import TaskKind
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.summary.target_summary import SummaryLimits

pytestmark = pytest.mark.e2e

UNFINISHED = 200
LOOKUP_BATCH = 20  # 10 lookups between full syncs, each answered with a padded page
CAP = 2 * 1024 * 1024
PADDING_TASKS = 10  # some 0.65 MB of unasked tasks with every lookup's answer


def test_lookups_count_against_the_collection_byte_cap(gateways: list[HostileGateway]) -> None:
    gateway = start_gateway(gateways, padded_lookups(UNFINISHED, PADDING_TASKS))
    args = exporter_args(
        gateway.url,
        *("--resync-seconds", "3600", "--page-size", "10"),  # a full sync costs 21 pages
        *("--task-lookup-batch", str(LOOKUP_BATCH), "--max-collection-bytes", str(CAP)),
    )
    exporter = Exporter(args).wait_started()
    try:
        full = exporter.scrape(timeout_header=20, wait=30)
        assert full.up() == 1, exporter.log()
        listed = len(gateway.connections)
        time.sleep(1.1)  # a new EndTime: the next collection asks only for what changed
        between = exporter.scrape(timeout_header=20, wait=30)
        failures = exporter.failures(at_least=1)
    finally:
        exporter.stop()
    lookups = gateway.connections[listed:]
    assert all(any(name.startswith("TaskId.") for name in c.form) for c in lookups[1:])
    answer = max(connection.sent for connection in lookups)
    read = sum(connection.sent for connection in lookups)
    # At most the cap, and the answer that crossed it, which the cap cut short.
    assert read <= CAP + answer, f"{read / 2**20:.1f} MiB read against a {CAP / 2**20} MiB cap"
    assert between.up() == 0
    assert [record.get("reason") for record in failures] == ["invalid_response"]
    assert "max_collection_bytes" in failures[0]["detail"]
    assert between.outcome("invalid_response") == 1


def first_page_then(failing: Behaviour) -> Behaviour:
    """A full first page that promises more, then ``failing`` for every later page: the
    failures come while several pages are in flight."""
    first = full_pages(urls_per_task=5)

    def behave(peer: Peer) -> None:
        (first if peer.form.get("Offset") == "0" else failing)(peer)

    return behave


FAILING_PAGES = {
    "byte cap": full_pages(urls_per_task=5),
    "retries exhausted": first_page_then(http_error(503)),
    "cut mid-body, retried": first_page_then(cut_mid_body()),
    "exchange cut": first_page_then(drip_headers()),
}


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """The cycle collector off for the test (whatever is already garbage collected first)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def exporter_frames_in_cycles() -> list[str]:
    """The functions of the exporter whose frames only the cycle collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what it finds unreachable, to look at
    gc.collect()
    return sorted(
        {
            garbage.f_code.co_qualname
            for garbage in gc.garbage
            if type(garbage).__name__ == "frame" and "/exporter/" in garbage.f_code.co_filename
        }
    )


@pytest.mark.parametrize("behaviour", list(FAILING_PAGES.values()), ids=list(FAILING_PAGES))
@pytest.mark.usefixtures("no_cycle_collector")
def test_a_failed_collection_leaves_no_frame_in_a_reference_cycle(
    gateways: list[HostileGateway], behaviour: Behaviour
) -> None:
    gateway = start_gateway(gateways, behaviour)
    options = ClientOptions(
        page_size=20, max_collection_bytes=256 * 1024, request_timeout=0.5, max_retries=1
    )
    client = ApiClient(gateway.url, "public", SecretStr("private"), options=options)
    kinds = [TaskKind.named(name, SummaryLimits()) for name in ("prefetch", "refresh")]
    collector = UcdnCollector(client, [Target("", "cdn")], kinds=kinds)
    try:
        for _ in range(2):
            metrics = collector.collect_within(Deadline.after(5.0))
            ups = [s.value for m in metrics if m.name.endswith("_up") for s in m.samples]
            assert ups == [0, 0]
        del metrics
    finally:
        collector.close()
        client.close()
    assert exporter_frames_in_cycles() == []


PAGE = (100, 1350)  # URLs per task and characters per URL: 100 tasks make 14.5 MB
BOTH_KINDS = ("--task-kinds", "prefetch,refresh")


SCRAPES = 8
RSS_MB = 150  # resident after any failed scrape: docs/operating.md
PEAK_MB = 200  # the pod's limit is 256Mi


def rss_over_failing_scrapes(exporter: Exporter) -> list[dict[str, float]]:
    """The exporter's memory after each of :data:`SCRAPES` scrapes, each failing at the cap."""
    memory = []
    for _ in range(SCRAPES):
        scrape = exporter.scrape(timeout_header=30, wait=60)
        ups = [v for (name, _), v in scrape.samples().items() if name.endswith("_up")]
        assert ups == [0, 0], exporter.log()
        memory.append(exporter.memory_mb())
    failures = exporter.failures(at_least=2 * SCRAPES)
    assert all("max_collection_bytes" in record.get("detail", "") for record in failures)
    return memory


def assert_flat(memory: list[dict[str, float]]) -> None:
    """RSS stays within the figures docs/operating.md gives, scrape after scrape: the
    allocator warms up over the first scrapes, and nothing piles up afterwards."""
    rss = [sample["VmRSS"] for sample in memory]
    assert max(rss) < RSS_MB, rss
    assert memory[-1]["VmHWM"] < PEAK_MB, memory
    half = len(rss) // 2
    assert max(rss[half:]) < max(rss[:half]) + 30, rss


def test_rss_stays_flat_over_scrapes_failing_at_the_cap_without_the_cycle_collector(
    gateways: list[HostileGateway], tmp_path: Path
) -> None:
    """Both kinds, 14.5 MB pages for ever, a window's worth asked for at once: every
    collection fails at the 32 MiB cap while pages are still being read."""
    gateway = start_gateway(gateways, full_pages(*PAGE, promised=10**6))
    args = exporter_args(gateway.url, "--log-level", "info", *BOTH_KINDS)
    exporter = Exporter(args, env=without_cycle_collector(tmp_path)).wait_started()
    try:
        assert_flat(rss_over_failing_scrapes(exporter))
    finally:
        exporter.stop()


def test_rss_of_an_honest_window_larger_than_the_cap_stays_flat(
    gateways: list[HostileGateway],
) -> None:
    """An honest 45 MB window of 14.5 MB pages, both kinds: every collection fails at the
    cap, a page short of the end."""
    gateway = start_gateway(gateways, full_pages(*PAGE, total=310))
    exporter = Exporter(exporter_args(gateway.url, "--log-level", "info", *BOTH_KINDS))
    exporter.wait_started()
    try:
        assert_flat(rss_over_failing_scrapes(exporter))
    finally:
        exporter.stop()
