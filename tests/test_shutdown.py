"""SIGTERM ends the exporter within its grace, exit status 0, whatever the gateway does.

Kubernetes sends SIGTERM to the process and SIGKILLs it 30 s later; systemd alike. A
request stuck on a gateway that never answers, or drips a byte a second, must not keep
the process alive: the scrape waiting on it is answered at once (``up 0``), threads still
in a request get a second once the server has stopped, and a last resort exits after
:data:`exporter.cli.SHUTDOWN_GRACE_SECONDS` whatever happens: the bound asserted here.
The exporter runs as a real process; the wall time from the signal to the exit is what
is asserted, with a margin for a shared machine.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import requests
from conftest import exporter_args
from exposition import samples
from faultkit import Exporter
from simfaults import SimulatedApi

from exporter.cli import SHUTDOWN_GRACE_SECONDS
from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

MARGIN = 1.5  # seconds on top of the bound: process start-up noise on a busy machine
NOW = int(time.time())
Start = Callable[..., Exporter]


@pytest.fixture
def api(simulator: Callable[..., SimulatedApi]) -> SimulatedApi:
    return simulator(StaticDataset({("", False): generate_tasks(12, 3, now=NOW)}))


def scrape_in_flight(
    pool: ThreadPoolExecutor, api: SimulatedApi, exporter: Exporter
) -> Future[requests.Response]:
    """A scrape with 25 s to go, once its request has reached the gateway."""
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "25"}
    scrape = pool.submit(exporter.get, "metrics", 40.0, **headers)
    give_up = time.monotonic() + 10
    while api.request_count() == 0 and time.monotonic() < give_up:
        time.sleep(0.02)
    assert api.request_count() >= 1, "the scrape never reached the gateway"
    time.sleep(0.3)  # the request is now in the gateway's hands
    return scrape


def terminate(exporter: Exporter) -> tuple[int, float]:
    """SIGTERM to the process, as Kubernetes sends it; the exit status and seconds taken."""
    sent = time.monotonic()
    exporter.process.send_signal(signal.SIGTERM)
    try:
        code = exporter.process.wait(timeout=SHUTDOWN_GRACE_SECONDS + 20)
    except Exception:
        exporter.process.kill()
        raise
    return code, time.monotonic() - sent


@pytest.mark.parametrize("gateway", ["hang", "drip"])
def test_sigterm_with_a_scrape_stuck_on_the_gateway_exits_0_within_the_grace(
    api: SimulatedApi, start_exporter: Start, gateway: str
) -> None:
    exporter = start_exporter(*exporter_args(api))
    if gateway == "hang":
        api.faults.hang()
    else:
        api.faults.drip(1)
    with ThreadPoolExecutor(1) as pool:
        scrape = scrape_in_flight(pool, api, exporter)
        code, seconds = terminate(exporter)
        response = scrape.result(5)
    assert code == 0
    assert seconds <= SHUTDOWN_GRACE_SECONDS + MARGIN, f"exited {seconds:.1f} s after SIGTERM"
    # The scrape in flight was answered, not cut: its target is down, the answer parses.
    assert response.status_code == 200
    assert samples(response.text)[("ucdn_prefetch_up", _DEFAULT)] == 0
    assert "Traceback" not in exporter.log()


def test_sigterm_with_a_slow_but_answering_gateway_needs_no_last_resort(
    api: SimulatedApi, start_exporter: Start
) -> None:
    """The orderly path alone ends the process: well before the last resort would fire."""
    exporter = start_exporter(*exporter_args(api))
    api.faults.delay(1.0)
    with ThreadPoolExecutor(1) as pool:
        scrape = scrape_in_flight(pool, api, exporter)
        code, seconds = terminate(exporter)
        assert scrape.result(5).status_code == 200
    assert code == 0
    assert seconds < SHUTDOWN_GRACE_SECONDS - 1, f"exited {seconds:.1f} s after SIGTERM"


def test_sigterm_when_idle_exits_at_once(api: SimulatedApi, start_exporter: Start) -> None:
    exporter = start_exporter(*exporter_args(api))
    assert exporter.get().status_code == 200
    code, seconds = terminate(exporter)
    assert code == 0
    assert seconds < 2.5, f"exited {seconds:.1f} s after SIGTERM"


HANGUP_LINE = (
    "SIGHUP ignored: the exporter reads its settings at start only; restart it to apply new ones"
)


def test_sighup_mid_scrape_is_ignored_and_logged_once(
    api: SimulatedApi, start_exporter: Start
) -> None:
    """SIGHUP's default action ends a process: a terminal closing, or an operator used to
    reloading Prometheus, must not take the exporter down mid-scrape."""
    exporter = start_exporter(*exporter_args(api))
    api.faults.delay(1.0, times=1)
    with ThreadPoolExecutor(1) as pool:
        scrape = scrape_in_flight(pool, api, exporter)
        exporter.process.send_signal(signal.SIGHUP)
        response = scrape.result(10)
    # The scrape in flight completes with its figures, and the process keeps serving.
    assert response.status_code == 200
    assert samples(response.text)[("ucdn_prefetch_up", _DEFAULT)] == 1
    assert exporter.process.poll() is None
    assert exporter.get().status_code == 200
    give_up = time.monotonic() + 5  # the line reaches us through a pipe
    while HANGUP_LINE not in exporter.stderr and time.monotonic() < give_up:
        time.sleep(0.05)
    hangups = [r for r in exporter.log_records() if "SIGHUP" in r.get("msg", "")]
    assert [(r["level"], r["msg"]) for r in hangups] == [("warning", HANGUP_LINE)]
    code, _ = terminate(exporter)
    assert code == 0


_DEFAULT = frozenset({("project_id", "default"), ("platform", "cdn")})
