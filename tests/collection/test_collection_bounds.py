"""One collection's bounds hold for all it does, and a failed one gives its memory back.

The exporter as a real process against :mod:`hostile` gateways on loopback:
``MAX_COLLECTION_BYTES`` counts every byte read for a target in a collection, its
lookups by TaskId as much as its pages (counted on the gateway's side).
"""

import time

import pytest
from conftest import start_gateway
from faultkit import Exporter, exporter_args
from hostile import HostileGateway, padded_lookups

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
