"""The gateway's own signals, against the simulator and raw socket gateways on loopback.

RetCodes worth a retry (153 rate limit, 110, 130, 150) are retried inside the deadline;
the client's own requests-per-second limit spaces requests and never waits past a
deadline; odd ``RetCode``/``Message`` types, ``Retry-After`` values and request ids
are taken strictly; a failed page past the end of the data does not fail the target.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.gateway.answers import ACTIONS, PREFETCH_ACTION, decode_response
from exporter.gateway.api_client import ApiClient
from exporter.gateway.budgets import RateLimit
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import OUTCOMES, ApiError, RequestStats
from exporter.gateway.transport import ClientOptions
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, REQUEST_ID_HEADER
from exporter.simulator.static import StaticDataset, generate_tasks

NOW = 1_800_000_000
TARGET = ("proj-a", False)
MARGIN = 1.5  # generous: the machine is shared and noisy


@pytest.fixture
def client_for() -> Iterator[Callable[..., ApiClient]]:
    clients: list[ApiClient] = []

    def make(url: str, **options: Any) -> ApiClient:
        client = ApiClient(
            url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions(**options)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def served(count: int) -> list[dict[str, Any]]:
    return generate_tasks(count, 2, now=NOW, seed=count)


def fetch(client: ApiClient, seconds: float = 20.0) -> Any:
    return client.fetch_tasks(
        TARGET[0], is_dcdn=False, begin=NOW - 86400, end=NOW, deadline=Deadline.after(seconds)
    )


def count(client: ApiClient, seconds: float = 20.0) -> int:
    return client.count_tasks(
        TARGET[0], is_dcdn=False, begin=NOW - 86400, end=NOW, deadline=Deadline.after(seconds)
    )


def failure(call: Callable[[], object]) -> tuple[ApiError, float]:
    """The ApiError ``call`` raises, and how long it took to raise it."""
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value, time.monotonic() - started


# --- RetCodes worth a retry


def test_rate_limited_answers_are_retried_and_counted(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(5)}))
    api.faults.ret_code(153, "Request too frequently", times=2)
    client = client_for(api.url, max_retries=2)
    window = fetch(client)
    assert len(window.tasks) == 5
    assert api.request_count() == 3
    stats = client.stats.snapshot()
    assert stats[PREFETCH_ACTION, "rate_limited"] == 2
    assert stats[PREFETCH_ACTION, "ok"] == 1
    assert stats[PREFETCH_ACTION, "api_error"] == 0


def test_a_lasting_rate_limit_fails_as_rate_limited_within_the_deadline(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(5)}))
    api.faults.ret_code(153, "Request too frequently")
    error, seconds = failure(lambda: fetch(client_for(api.url, max_retries=10), seconds=1.0))
    assert error.reason == "rate_limited"
    assert error.detail.startswith("RetCode 153")
    assert seconds < 1.0 + MARGIN
    # Backed off between attempts: ten retries with full jitter from 0.2 s do not fit in 1 s.
    assert 2 <= api.request_count() <= 10


@pytest.mark.parametrize("code", [110, 130, 150])
def test_passing_gateway_faults_are_retried_as_api_errors(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient], code: int
) -> None:
    api = simulator(StaticDataset({TARGET: served(5)}))
    api.faults.ret_code(code, "service unavailable", times=1)
    client = client_for(api.url)
    assert len(fetch(client).tasks) == 5
    assert api.request_count() == 2
    assert client.stats.snapshot()[PREFETCH_ACTION, "api_error"] == 1


@pytest.mark.parametrize("code", [160, 161, 171, 172, 292, 294, 299])
def test_errors_a_retry_cannot_mend_are_not_retried(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient], code: int
) -> None:
    api = simulator(StaticDataset({TARGET: served(5)}))
    api.faults.ret_code(code, "no")
    error, _ = failure(lambda: fetch(client_for(api.url, max_retries=3)))
    assert error.reason == "api_error"
    assert api.request_count() == 1


# --- the client's own rate limit


@pytest.mark.e2e  # seconds on loopback by design
def test_n_requests_take_about_n_over_rate_seconds_from_many_threads(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    rate, calls = 10.0, 21
    client = client_for(api.url, max_requests_per_second=rate)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=7) as pool:
        counts = list(pool.map(lambda _: count(client), range(calls)))
    elapsed = time.monotonic() - started
    assert counts == [3] * calls
    # The first request goes at once, each next one 1/rate later.
    assert elapsed >= (calls - 1) / rate - 0.05
    assert elapsed < (calls - 1) / rate + MARGIN
    arrivals = sorted(request.received for request in api.requests)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # The gateway sees them spaced (less a little for the network's jitter).
    assert min(gaps) > 0.5 / rate
    assert sum(gaps) >= (calls - 1) / rate - 0.1


@pytest.mark.e2e  # seconds on loopback by design
def test_the_rate_limit_is_shared_by_the_pages_of_every_target(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    tasks = {TARGET: served(50), ("proj-b", True): served(40)}
    api = simulator(StaticDataset(tasks))
    client = client_for(api.url, page_size=10, parallel_pages=8, max_requests_per_second=20)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        windows = list(
            pool.map(
                lambda target: client.fetch_tasks(
                    target[0],
                    is_dcdn=target[1],
                    begin=NOW - 86400,
                    end=NOW,
                    deadline=Deadline.after(20),
                ),
                tasks,
            )
        )
    elapsed = time.monotonic() - started
    assert [len(window.tasks) for window in windows] == [50, 40]
    requests_sent = api.request_count()
    assert requests_sent >= 11  # 6 pages of one target and 5 of the other, at least
    assert elapsed >= (requests_sent - 1) / 20 - 0.05


@pytest.mark.e2e  # seconds on loopback by design
def test_a_wait_for_a_slot_past_the_deadline_fails_at_once_and_none_overruns(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    rate, deadline_seconds = 2.0, 1.2
    client = client_for(api.url, max_requests_per_second=rate)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        try:
            count(client, seconds=deadline_seconds)
            outcome = "ok"
        except ApiError as error:
            outcome = error.reason if "rate limit" in error.detail else f"other {error}"
        with lock:
            results.append((outcome, time.monotonic() - started))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline_seconds + 5)
    assert len(results) == 8
    outcomes = [outcome for outcome, _ in results]
    # Slots at 0, 0.5 and 1.0 s fit in a 1.2 s deadline; the other five have none.
    assert outcomes.count("ok") == 3, results
    assert outcomes.count("timeout") == 5, results
    assert all(seconds < deadline_seconds + MARGIN for _, seconds in results)
    # Those without a slot failed at once rather than sleeping into their deadline.
    assert all(seconds < 0.5 for outcome, seconds in results if outcome == "timeout")
    assert api.request_count() == 3
    assert client.stats.snapshot()[PREFETCH_ACTION, "timeout"] == 5


def test_a_rate_limit_of_zero_is_no_limit() -> None:
    limit = RateLimit(0)
    deadline = Deadline.after(0.001)
    assert all(limit.reserve(deadline) == 0.0 for _ in range(10_000))


def test_a_slot_is_not_taken_by_a_request_that_fails_for_want_of_one() -> None:
    clock = [100.0]
    limit = RateLimit(1.0, clock=lambda: clock[0])
    assert limit.reserve(Deadline.after(5)) == 0.0
    assert limit.reserve(Deadline.after(5)) == pytest.approx(1.0)
    with pytest.raises(ApiError, match="rate limit"):
        limit.reserve(Deadline.after(1.5))  # its slot, at 2 s, is past its deadline
    assert limit.reserve(Deadline.after(5)) == pytest.approx(2.0)


# --- what the answers may look like


def test_a_string_ret_code_is_read_as_the_number() -> None:
    assert decode_response(b'{"RetCode": "0", "TotalCount": "2"}').total_count == 2
    assert decode_response(b'{"RetCode": "171", "Message": "x"}').ret_code == 171


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"RetCode": "0", "TaskList": []}', None),
        (b'{"RetCode": "171", "Message": "Signature VerifyAC Error"}', "api_error"),
        (b'{"RetCode": 171, "Message": null}', "api_error"),
        (b'{"RetCode": "153", "Message": null}', "rate_limited"),
        (b'{"RetCode": "zero"}', "invalid_response"),
        (b'{"RetCode": 1e400}', "invalid_response"),
        (b'{"RetCode": 99999999999999999999999}', "invalid_response"),
    ],
)
def test_odd_ret_codes_and_null_messages_end_as_outcomes(
    simulator: Callable[..., SimulatedApi],
    client_for: Callable[..., ApiClient],
    body: bytes,
    reason: str | None,
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    # An HTTP 200 with this JSON body, as the gateway would send it.
    api.faults.http_error(200, body=body.decode())
    client = client_for(api.url, max_retries=0)
    if reason is None:
        assert count(client) == 0
        return
    error, _ = failure(lambda: count(client))
    assert error.reason == reason
    if reason != "invalid_response":
        assert error.detail.startswith("RetCode 1")


# --- Retry-After


class RawGateway:
    """A loopback server that answers every request with the same raw bytes, then closes.

    It reads the request head and body (by Content-Length) first, so the client sees a
    complete exchange; ``answers`` counts the requests answered.
    """

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/"
        self.answers = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._sock.accept()
            except OSError:
                return  # close() shut the listener down
            with connection:
                connection.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                # Counted before sending: the client may be done before sendall returns.
                self.answers += 1
                connection.sendall(self._response)

    def close(self) -> None:
        # Shutting the listener down wakes the blocked accept(); closing it alone would not.
        self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._sock.close()


def raw_answer(status: str, headers: list[bytes], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}".encode(), *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join([*lines, b"Connection: close", b"", body])


@pytest.fixture
def raw_gateway() -> Iterator[Callable[[bytes], RawGateway]]:
    started: list[RawGateway] = []

    def start(response: bytes) -> RawGateway:
        gateway = RawGateway(response)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()


@pytest.mark.parametrize(
    "value",
    [
        "\u00b2",  # a digit to str.isdigit(), not to float()
        "-1",
        "1e9",
        "nan",
        "inf",
        "0x10",
        "1.5",
        "\u00ff\u00fe garbage",
        "Mon, 01 Jan 1990 00:00:00 GMT",
        "Mon, 01 Jan 1990 00:00:00",  # no zone: not an HTTP date
        "Sun, 99 Foo 99999 99:99:99 GMT",
    ],
)
def test_an_unusable_or_past_retry_after_means_a_normal_back_off(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient], value: str
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    api.faults.http_error(503, retry_after=value, times=1)
    started = time.monotonic()
    assert count(client_for(api.url, max_retries=1), seconds=5) == 3
    # Full jitter from 0.2 s: the retry came at once, not after any "Retry-After".
    assert time.monotonic() - started < 0.2 + MARGIN
    assert api.request_count() == 2


@pytest.mark.parametrize(
    "value", ["9" * 5000, "99999999999", "Fri, 31 Dec 9999 23:59:59 GMT", "86400"]
)
def test_a_retry_after_beyond_the_deadline_fails_at_once(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient], value: str
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    api.faults.http_error(503, retry_after=value)
    error, seconds = failure(lambda: count(client_for(api.url, max_retries=2), seconds=5))
    assert error.reason == "http_error"
    assert seconds < MARGIN
    assert api.request_count() == 1


@pytest.mark.e2e  # seconds on loopback by design
def test_a_short_retry_after_is_waited_for(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    api.faults.http_error(429, retry_after=" 1 ", times=1)
    started = time.monotonic()
    assert count(client_for(api.url, max_retries=1), seconds=5) == 3
    assert 0.95 <= time.monotonic() - started < 1.0 + MARGIN


def test_non_ascii_retry_after_bytes_do_not_crash_the_client(
    raw_gateway: Callable[[bytes], RawGateway], client_for: Callable[..., ApiClient]
) -> None:
    gateway = raw_gateway(
        raw_answer("503 Service Unavailable", [b"Retry-After: \xb2\xe6\x97\xa5\x00"], b"busy")
    )
    error, seconds = failure(lambda: count(client_for(gateway.url, max_retries=1), seconds=5))
    assert error.reason == "http_error"
    assert seconds < 0.2 + MARGIN
    assert gateway.answers == 2


# --- the gateway's request id


def test_a_failed_call_carries_the_gateways_request_id(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    client = client_for(api.url, max_retries=0)
    api.faults.http_error(403, headers={REQUEST_ID_HEADER: "8f2c-41a7:b9.x_Z"}, times=1)
    error, _ = failure(lambda: count(client))
    assert (error.reason, error.request_id) == ("http_error", "8f2c-41a7:b9.x_Z")
    api.faults.http_error(503, headers={REQUEST_ID_HEADER: "retry-1"}, times=1)
    error, _ = failure(lambda: count(client))
    assert (error.reason, error.request_id) == ("http_error", "retry-1")
    # The simulator's own uuid4, on an API error, a rate limit and an invalid answer.
    injections: list[tuple[Callable[[], None], str]] = [
        (lambda: api.faults.ret_code(292, "Project not exist", times=1), "api_error"),
        (lambda: api.faults.ret_code(153, "too frequently", times=1), "rate_limited"),
        (lambda: api.faults.bad_json(times=1), "invalid_response"),
        (lambda: api.faults.html_page(times=1), "invalid_response"),
    ]
    for inject, reason in injections:
        inject()
        error, _ = failure(lambda: count(client))
        assert error.reason == reason
        assert error.request_id is not None
        assert uuid.UUID(error.request_id).version == 4


def test_no_answer_means_no_request_id(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    api.faults.reset()
    error, _ = failure(lambda: count(client_for(api.url, max_retries=0)))
    assert error.reason == "connection_error"
    assert error.request_id is None


@pytest.mark.parametrize(
    "value",
    [
        "a" * 129,
        "has space",
        'quote"d',
        "key=value",
        "<script>",
        "\u00e9t\u00e9",
        "tab\there",
    ],
)
def test_a_request_id_that_is_not_a_plain_id_is_recorded_as_absent(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient], value: str
) -> None:
    api = simulator(StaticDataset({TARGET: served(3)}))
    api.faults.http_error(404, headers={REQUEST_ID_HEADER: value})
    error, _ = failure(lambda: count(client_for(api.url)))
    assert error.reason == "http_error"
    assert error.request_id is None


@pytest.mark.parametrize(
    "value", [b"\x1b[31mred\x1b[0m", b"\xe6\x97\xa5\xe6\x9c\xac", b"ok\x00nul"]
)
def test_control_and_non_ascii_bytes_in_the_request_id_are_dropped(
    raw_gateway: Callable[[bytes], RawGateway],
    client_for: Callable[..., ApiClient],
    value: bytes,
) -> None:
    body = b'{"RetCode": 171, "Message": "Signature VerifyAC Error"}'
    header = REQUEST_ID_HEADER.encode() + b": " + value
    gateway = raw_gateway(raw_answer("200 OK", [b"Content-Type: application/json", header], body))
    error, _ = failure(lambda: count(client_for(gateway.url)))
    assert error.reason == "api_error"
    assert error.request_id is None


# --- pages past the end


class SlowDataset(StaticDataset):
    """Real answers take a while; faults, which answer without the data, do not.

    So the failures past the end arrive before the short page that makes them
    irrelevant, the order in which they could fail the target.
    """

    def tasks(self, target: Any, begin: int, end: int) -> list[dict[str, Any]]:
        time.sleep(0.3)
        return super().tasks(target, begin, end)


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(
            lambda api: api.faults.ret_code(230, "Offset too big", from_offset=300), id="api-error"
        ),
        pytest.param(lambda api: api.faults.http_error(500, from_offset=300), id="http-500"),
        pytest.param(lambda api: api.faults.bad_json(from_offset=300), id="bad-json"),
        pytest.param(lambda api: api.faults.reset(from_offset=300), id="reset"),
        pytest.param(
            lambda api: api.faults.ret_code(153, "slow down", from_offset=300), id="rate-limited"
        ),
    ],
)
@pytest.mark.e2e  # seconds on loopback by design
def test_a_failed_page_past_the_short_one_does_not_fail_the_target(
    simulator: Callable[..., SimulatedApi],
    client_for: Callable[..., ApiClient],
    inject: Callable[[SimulatedApi], None],
) -> None:
    tasks = served(250)
    api = simulator(SlowDataset({TARGET: tasks}))
    api.total_count_error = 1000  # promises 13 pages of 100; page 2 is the short one
    inject(api)
    window = fetch(client_for(api.url, page_size=100, parallel_pages=8, max_retries=1))
    assert sorted(task.task_id for task in window.tasks) == sorted(t["TaskId"] for t in tasks)
    assert window.pages == 3
    offsets = {int(request.params["Offset"]) for request in api.requests}
    assert {0, 100, 200} <= offsets
    assert any(offset >= 300 for offset in offsets), "the fault was exercised"


def test_a_failed_page_before_the_end_fails_the_target(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(250)}))
    api.total_count_error = 1000
    api.faults.ret_code(230, "Params [Offset] not available", from_offset=100)
    error, _ = failure(lambda: fetch(client_for(api.url, page_size=100, parallel_pages=8)))
    assert (error.reason, error.detail) == (
        "api_error",
        "RetCode 230: Params [Offset] not available",
    )


def test_a_failed_page_when_total_count_is_too_low_fails_the_target(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    # TotalCount says one page; every page from the fourth fails; pages run out of data at 25.
    api = simulator(StaticDataset({TARGET: served(250)}))
    api.total_count_error = -240
    api.faults.http_error(404, from_offset=30)
    error, _ = failure(lambda: fetch(client_for(api.url, page_size=10, parallel_pages=2)))
    assert (error.reason, error.detail) == ("http_error", "HTTP 404")


def test_request_stats_count_every_action_and_outcome_from_zero() -> None:
    stats = RequestStats()
    assert list(stats.snapshot()) == [(a, o) for a in ACTIONS for o in OUTCOMES]
    assert set(stats.snapshot().values()) == {0}
    stats.record(ACTIONS[2], "rate_limited")
    counted = {key for key, count in stats.snapshot().items() if count}
    assert counted == {(ACTIONS[2], "rate_limited")}
