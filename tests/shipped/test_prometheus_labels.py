"""A real Prometheus with ``label_value_length_limit: 1024`` keeps the exporter's target up
when the gateway names a 100 KB host, in task URLs and in the domain list.

Prometheus rejects a whole scrape over one label value past its limit (the target goes
down, every series of it stale); the exporter cuts every label value to
``MAX_LABEL_VALUE_LENGTH`` bytes (default 1024), whatever the label, so the target stays up
and the domain series are there, cut to a prefix, ``…`` and a hash of the whole value.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import exporter_args, stop_process, url_entry
from faultkit import NOW, Exporter
from promkit import Prometheus, run_prometheus
from simfaults import SimulatedApi

from exporter.metrics import QUOTA_FAMILIES
from exporter.simulator.protocol import Domain
from exporter.simulator.static import StaticDataset

pytestmark = pytest.mark.system

JOB = "ucdn-prefetch-exporter"
LIMIT = 1024
LONG_HOST = "h" * 100_000 + ".example.com"
CUT = re.compile(r"\Ahhh[^…]*…[0-9a-f]{16}\Z")
DEADLINE_SECONDS = 60.0


def long_host_world() -> StaticDataset:
    """Both kinds' tasks on the long host and a short one; the long host's domain listed."""
    tasks = [
        {
            "TaskId": f"t-{index}",
            "CreateTime": NOW - 60,
            "Status": "success",
            "UrlLists": [url_entry(f"https://{host}/a.bin", "success", NOW - 60, NOW - 30, 100)],
        }
        for index, host in enumerate((LONG_HOST, "a.example"))
    ]
    return StaticDataset(
        {("", False): tasks},
        refresh_tasks={("", False): tasks},
        domains={"": [Domain(LONG_HOST, "d-1"), Domain("a.example", "d-2")]},
    )


@pytest.fixture
def prometheus(tmp_path: Path, simulator: Callable[..., SimulatedApi]) -> Iterator[Prometheus]:
    """Prometheus scraping the exporter every second with the label value limit."""
    api = simulator(long_host_world())
    exporter = Exporter(exporter_args(api)).wait_started()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "label_value_length_limit": LIMIT,
                "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
            }
        ],
    }
    process, prometheus = run_prometheus(tmp_path, config)
    try:
        yield prometheus
    finally:
        stop_process(process)
        exporter.stop()


def test_a_100_kb_host_keeps_the_target_up_under_a_label_value_limit(
    prometheus: Prometheus,
) -> None:
    scraped = f'count_over_time(up{{job="{JOB}"}}[1m])'
    end = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < end:
        with contextlib.suppress(requests.RequestException):  # not answering yet
            if prometheus.query(f"{scraped} >= 3"):
                break
        time.sleep(0.5)
    else:
        raise AssertionError(
            f"fewer than 3 scrapes within {DEADLINE_SECONDS}s:\n{prometheus.log_path.read_text()}"
        )
    # Every scrape was accepted: one rejected over a label value would be up 0.
    assert prometheus.query(f'min_over_time(up{{job="{JOB}"}}[1m])')[0]["value"][1] == "1"
    for name in (
        "ucdn_prefetch_domain_urls",
        "ucdn_refresh_domain_urls",
        QUOTA_FAMILIES.quota.name,
        QUOTA_FAMILIES.used.name,
        QUOTA_FAMILIES.prefetch_enabled.name,
    ):
        domains = {series["metric"]["domain"] for series in prometheus.query(name)}
        long_ones = domains - {"a.example", "_other"}
        assert len(long_ones) == 1, (name, domains)
        [cut] = long_ones
        assert len(cut.encode()) <= LIMIT and CUT.match(cut), name
    truncated = prometheus.query('ucdn_prefetch_records_invalid{reason="label_value_truncated"}')
    assert [series["value"][1] for series in truncated] == ["1"]
