"""The collector's exposition, byte for byte, for two small worlds, in process.

As client_python's own tests do: a registry holds the collector, ``generate_latest``
renders it, and the text is compared with an expected file in tests/fixtures/. The
collector talks to the simulated API on loopback (or to a closed port), on a fixed wall
clock; only the measured duration varies, and is replaced by a placeholder. The larger
reviewed world is tests/fixtures/golden.prom (test_golden.py, which also runs promtool).
"""

import logging
import re
from collections.abc import Iterator

import pytest
from conftest import FIXTURES, url_entry
from faultkit import closed_port_url
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from exporter.gateway.api_client import ApiClient
from exporter.gateway.transport import ClientOptions
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset
from exporter.summary.target_summary import SummaryLimits
from exporter.version import __version__

NOW = 1_790_000_000
SHOP = Target("shop", "cdn")
DURATION = re.compile(rb"^(ucdn_prefetch_scrape_duration_seconds\{[^}]*\}) \S+$", re.MULTILINE)
# Two tasks: one in process (a URL done in 10 s, one at 40 %), one failed after 100 s.
DATASET = {
    ("shop", False): [
        {
            "TaskId": "t-1",
            "CreateTime": NOW - 600,
            "Status": "process",
            "UrlLists": [
                url_entry("https://cdn.example.com/a.js", "success", NOW - 600, NOW - 590, 100),
                url_entry("https://cdn.example.com/b.css", "process", NOW - 600, 0, 40),
            ],
        },
        {
            "TaskId": "t-2",
            "CreateTime": NOW - 4000,
            "Status": "failure",
            "UrlLists": [
                url_entry("https://cdn.example.com/c.bin", "failure", NOW - 4000, NOW - 3900, 0)
            ],
        },
    ]
}


def exposition(client: ApiClient) -> bytes:
    """The text exposition of one collector of SHOP in a registry, duration and version masked."""
    collector = UcdnCollector(
        client,
        [SHOP],
        limits=SummaryLimits(max_url_series=2, max_task_series=1, buckets=(60.0, 3600.0)),
        wall_clock=lambda: NOW,
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        text = DURATION.sub(rb"\1 <duration>", generate_latest(registry))
        # A release changes the version, not the exposition's shape.
        return text.replace(f'version="{__version__}"'.encode(), b'version="<version>"')
    finally:
        collector.close()


@pytest.fixture
def client_of() -> Iterator[list[ApiClient]]:
    clients: list[ApiClient] = []
    yield clients
    for client in clients:
        client.close()


def test_a_small_world_exposes_exactly_the_expected_text(client_of: list[ApiClient]) -> None:
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, StaticDataset(DATASET)) as api:
        client = ApiClient(
            api.url,
            DEMO_PUBLIC_KEY,
            SecretStr(DEMO_PRIVATE_KEY),
            options=ClientOptions(page_size=2),
        )
        client_of.append(client)
        text = exposition(client)
    assert text.decode() == (FIXTURES / "small-world.prom").read_text()


def test_an_unreachable_api_exposes_up_zero_and_no_figures(
    client_of: list[ApiClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = ApiClient(
        closed_port_url(), "public", SecretStr("private"), options=ClientOptions(max_retries=0)
    )
    client_of.append(client)
    with caplog.at_level(logging.WARNING):
        text = exposition(client)
    assert text.decode() == (FIXTURES / "unreachable.prom").read_text()
    assert [r.getMessage() for r in caplog.records] == ["collection failed"]
