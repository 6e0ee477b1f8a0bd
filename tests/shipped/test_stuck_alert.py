"""The stuck-task alert keeps firing after the stuck task leaves the lookback window.

A prefetch task stays `process` for hours in a one-hour window. Every minute, the task
sync collects it through the real client and the simulated API on loopback. The
`oldest_unfinished_task_created_timestamp_seconds` values it would publish become a
promtool input series. promtool then evaluates the shipped rules on that series.

`UcdnPrefetchTaskStuck` must be firing two hours in, long after the task left the window.
The same history with `STUCK_HORIZON_SECONDS=0` (the task is forgotten once it leaves the
window) must not fire. That second case shows the test can fail: without the store's
stuck tasks, the series goes absent and the alert clears.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, promtool, url_entry
from pydantic import SecretStr
from simworld import World, task

from exporter.collection.kinds import PREFETCH
from exporter.collection.sync import SyncOptions, TaskSync
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi

pytestmark = pytest.mark.system

START = 1_790_000_000  # the simulated clock at promtool's time 0
LOOKBACK = 3600
MINUTES = 150  # of collections, one a minute
STUCK_CREATED = START - 600  # leaves the window 50 minutes in; 2 hours old 110 minutes in
SERIES = "ucdn_prefetch_oldest_unfinished_task_created_timestamp_seconds"


@pytest.fixture
def client() -> Iterator[tuple[SimulatedApi, ApiClient]]:
    api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, World()).start()
    client = ApiClient(
        api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions()
    )
    yield api, client
    client.close()
    api.stop()


def published_history(gateway: tuple[SimulatedApi, ApiClient], horizon: int) -> list[int | None]:
    """The oldest-unfinished value each minute's collection of the world's one target gives,
    shifted to promtool's clock.

    ``None`` is a minute in which the family is absent.
    """
    api, client = gateway
    stuck = task(
        "stuck",
        STUCK_CREATED,
        "process",
        [url_entry("https://a.example/big.iso", "process", STUCK_CREATED, 0)],
    )
    api.dataset = World([stuck])
    clock = [START]
    options = SyncOptions(lookback_seconds=LOOKBACK, stuck_horizon_seconds=horizon)
    sync = TaskSync(client, Target("shop", "cdn"), PREFETCH, options, wall_clock=lambda: clock[0])
    history: list[int | None] = []
    for minute in range(MINUTES):
        clock[0] = START + 60 * minute
        oldest = sync.collect(Deadline.after(10)).summary.oldest_unfinished_created
        history.append(None if oldest is None else oldest - START)
    return history


def series_values(history: list[int | None]) -> str:
    """promtool's expanding notation, sample by sample: ``_`` is a missing sample."""
    return " ".join("_" if value is None else str(value) for value in history)


def test_the_stuck_task_alert_stays_firing_after_the_task_leaves_the_window(
    client: tuple[SimulatedApi, ApiClient], tmp_path: Path
) -> None:
    kept = published_history(client, horizon=7 * 86400)
    dropped = published_history(client, horizon=0)
    left_window = (STUCK_CREATED + LOOKBACK - START) // 60 + 1
    # Both saw the task while it was in the window; only the store kept it after.
    assert kept[:left_window] == dropped[:left_window] == [STUCK_CREATED - START] * left_window
    assert kept[left_window:] == [STUCK_CREATED - START] * (MINUTES - left_window)
    assert dropped[left_window:] == [None] * (MINUTES - left_window)

    labels = '{{job="ucdn-prefetch-exporter",instance="e:9866",project_id="{}",platform="cdn"}}'
    firing = 'ALERTS{{alertname="UcdnPrefetchTaskStuck",alertstate="firing",project_id="{}"}}'
    tests = {
        "rule_files": [str(REPO / "prometheus" / "rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": SERIES + labels.format(project), "values": series_values(history)}
                    for project, history in (("org-kept", kept), ("org-dropped", dropped))
                ],
                "promql_expr_test": [
                    {
                        "expr": f"count by (project_id) ({firing.format('org-kept')})",
                        "eval_time": "140m",
                        "exp_samples": [{"labels": '{project_id="org-kept"}', "value": 1}],
                    },
                    {
                        "expr": f"count by (project_id) ({firing.format('org-dropped')})",
                        "eval_time": "140m",
                        "exp_samples": [],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "stuck_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
