"""The client's pace: requests spaced at their slots and again as they go, and the
gateway's RetCode 153 lowering it by itself, time bringing it back.

Multiplicative decrease on a refusal (once for the refusals of one second), additive
increase each second without one, never above the configured rate; with no rate
configured there is no pace to lower. Against the simulator, a refusal lowers the pace of
the client that met it, with one log line that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.gateway.api_client import ApiClient
from exporter.gateway.budgets import RateLimit
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import StaticDataset, generate_tasks

NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_halves_the_pace_and_each_quiet_second_gives_some_back() -> None:
    clock = Clock()
    limit = RateLimit(20, clock=clock)
    assert limit.pace == 20
    assert limit.refused() == 10
    assert limit.refused() is None  # the same burst's refusals: one signal
    assert limit.pace == 10
    clock.now += 1.0
    assert limit.pace == pytest.approx(11)  # + 1/20 of the configured rate a second
    assert limit.refused() == pytest.approx(5.5)
    clock.now += 5.5  # whole seconds count: five of them
    assert limit.pace == pytest.approx(10.5)
    clock.now += 60
    assert limit.pace == 20  # never above the configured rate


def test_a_lowered_pace_spaces_the_slots_wider() -> None:
    clock = Clock()
    limit = RateLimit(20, clock=clock)
    deadline = Deadline.after(100, clock)
    assert limit.reserve(deadline) == 0
    assert limit.reserve(deadline) == pytest.approx(1 / 20)
    limit.refused()
    limit.refused()  # one burst: one halving
    assert limit.reserve(deadline) == pytest.approx(2 / 20)
    assert limit.reserve(deadline) == pytest.approx(2 / 20 + 1 / 10)


def test_a_request_late_for_its_slot_goes_a_full_gap_after_the_one_before() -> None:
    # Slots at 0, 0.05 and 0.10 s; the second's thread wakes late, after the third went:
    # sent as they woke, two requests would go 0.01 s apart.
    clock = Clock()
    limit = RateLimit(20, clock=clock)
    deadline = Deadline.after(100, clock)
    waits = [limit.reserve(deadline) for _ in range(3)]
    assert waits == [0, pytest.approx(0.05), pytest.approx(0.10)]
    assert limit.hold(deadline) == 0  # the first goes at its slot
    clock.now += 0.10
    assert limit.hold(deadline) == 0  # the third, on time
    clock.now += 0.01
    assert limit.hold(deadline) == pytest.approx(0.04)  # the second, late: held
    assert limit.hold(Deadline.after(1, clock)) == pytest.approx(0.04)  # asked again: held
    with pytest.raises(ApiError, match="rate limit"):
        limit.hold(Deadline.after(0.03, clock))  # held past its deadline: fails now
    clock.now += 0.04
    assert limit.hold(deadline) == 0


def test_no_configured_rate_has_no_pace_to_lower() -> None:
    limit = RateLimit(0)
    assert limit.refused() is None
    assert limit.pace == 0


def test_a_refusal_from_the_gateway_lowers_the_clients_pace_with_one_log_line(
    simulator: Callable[..., SimulatedApi], caplog: pytest.LogCaptureFixture
) -> None:
    api = simulator(StaticDataset({("p", False): generate_tasks(3, 1, now=NOW)}))
    api.faults.ret_code(153, "Request too frequently", times=1)
    client = ApiClient(
        api.url,
        DEMO_PUBLIC_KEY,
        SecretStr(DEMO_PRIVATE_KEY),
        options=ClientOptions(max_requests_per_second=40, max_retries=2),
    )
    try:
        assert client.pace == 40
        with caplog.at_level(logging.WARNING, logger="exporter.gateway.transport"):
            window = client.fetch_tasks(
                "p", is_dcdn=False, begin=NOW - 86400, end=NOW, deadline=Deadline.after(10)
            )
        assert len(window.tasks) == 3  # retried, and answered
        assert 20 <= client.pace < 40
        (record,) = [r for r in caplog.records if "pace lowered" in r.getMessage()]
        fields = record.__dict__["fields"]
        assert fields["pace_requests_per_second"] == 20
        assert fields["configured_requests_per_second"] == 40
    finally:
        client.close()
