"""The API client against the simulated gateway: paging that survives a lying TotalCount."""

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import StaticDataset, generate_tasks

NOW = 1_800_000_000
TARGET = ("proj-a", False)


@pytest.fixture
def client_for() -> Iterator[Callable[..., ApiClient]]:
    clients: list[ApiClient] = []

    def make(api: SimulatedApi, **options: Any) -> ApiClient:
        client = ApiClient(
            api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions(**options)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def fetch(client: ApiClient, project: str = "proj-a", dcdn: bool = False, **options: Any) -> Any:
    return client.fetch_tasks(
        project, is_dcdn=dcdn, begin=NOW - 86400, end=NOW, deadline=Deadline.after(20), **options
    )


def served(count: int) -> list[dict[str, Any]]:
    return generate_tasks(count, 3, now=NOW, seed=count)


@pytest.mark.parametrize("lie", [0, -40, -1000, 7, 500])
@pytest.mark.parametrize(("count", "page_size"), [(0, 10), (3, 10), (10, 10), (47, 10), (100, 7)])
def test_every_task_exactly_once_whatever_total_count_says(
    simulator: Callable[..., SimulatedApi],
    client_for: Callable[..., ApiClient],
    count: int,
    page_size: int,
    lie: int,
) -> None:
    tasks = served(count)
    api = simulator(StaticDataset({TARGET: tasks}))
    api.total_count_error = lie
    handed_on: list[list[Any]] = []
    window = fetch(client_for(api, page_size=page_size, parallel_pages=4), on_page=handed_on.append)
    assert sorted(t.task_id for t in window.tasks) == sorted(t["TaskId"] for t in tasks)
    assert window.duplicate_tasks == 0
    # Every page was handed on once, in order, whatever order the answers came in.
    assert [task for page in handed_on for task in page] == window.tasks
    assert len(handed_on) == window.pages
    assert all(len(page) == page_size for page in handed_on[:-1])
    assert len(handed_on[-1]) < page_size
    needed = count // page_size + 1  # the first short (possibly empty) page ends the paging
    # A lie costs at most one window of extra requests, never a missing page.
    assert needed <= api.request_count() <= needed + 4


def test_a_small_account_costs_one_request(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(5)}))
    fetch(client_for(api, page_size=100))
    assert api.request_count() == 1


@pytest.mark.e2e  # seconds on loopback by design
def test_promised_pages_come_in_parallel_as_slots_free(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(95)}))
    api.faults.delay(0.3)
    window = fetch(client_for(api, page_size=10, parallel_pages=8))
    assert len(window.tasks) == 95
    arrivals = sorted(r.received for r in api.requests)
    # First page alone, then pages 1-8 together, then page 9 (the short one TotalCount
    # promised) in the first slot that frees; no page to confirm the end is needed.
    assert len(arrivals) == 10
    assert arrivals[1] - arrivals[0] >= 0.25
    assert arrivals[8] - arrivals[1] < 0.25
    assert arrivals[9] - arrivals[1] >= 0.25


def test_when_total_count_fills_the_last_page_one_more_confirms_the_end(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(80)}))
    window = fetch(client_for(api, page_size=10, parallel_pages=8))
    assert len(window.tasks) == 80
    offsets = sorted(int(r.params["Offset"]) for r in api.requests)
    assert offsets == [0, 10, 20, 30, 40, 50, 60, 70, 80]


def test_requests_are_signed_post_forms_with_explicit_limit(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({("", True): served(2)}))
    window = fetch(client_for(api, page_size=50), project="", dcdn=True)
    assert len(window.tasks) == 2
    (request,) = api.requests
    assert request.method == "POST"
    assert request.encoding == "form"
    assert "?" not in request.path  # nothing signed travels in the URL
    assert request.params["Limit"] == "50"
    assert request.params["IsDcdn"] == "true"
    assert request.params["EndTime"] == str(NOW)
    assert request.params["BeginTime"] == str(NOW - 86400)
    assert "ProjectId" not in request.params  # the default project is the absent one


def test_page_cap_is_an_error(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(60)}))
    with pytest.raises(ApiError) as caught:
        fetch(client_for(api, page_size=10, max_pages=3))
    assert caught.value.reason == "invalid_response"
    assert api.request_count() <= 3


class GrowingDataset:
    """A set that gains a newest task on every request, as a busy account does while we page."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self._tasks = sorted(tasks, key=lambda t: -t["CreateTime"])
        self._lock = threading.Lock()
        self._added = 0

    def tasks(self, target: Any, begin: int, end: int) -> list[dict[str, Any]]:
        with self._lock:
            self._added += 1
            newest = {"TaskId": f"new-{self._added}", "CreateTime": NOW - 1, "Status": "wait"}
            self._tasks.insert(0, newest)
            return list(self._tasks)


def test_tasks_repeated_by_a_changing_set_count_once(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    original = served(40)
    api = simulator(GrowingDataset(original))
    # One page at a time, a task inserted per request shifts the set by one: every page
    # repeats the last task of the page before, and none can be skipped.
    handed_on: list[list[Any]] = []
    window = fetch(client_for(api, page_size=10, parallel_pages=1), on_page=handed_on.append)
    ids = [t.task_id for t in window.tasks]
    assert len(ids) == len(set(ids))
    assert window.duplicate_tasks > 0
    assert [task for page in handed_on for task in page] == window.tasks  # repeats held back
    assert {t["TaskId"] for t in original} <= set(ids)
    # Pages in parallel reach the gateway in any order and may skip a task of a changing
    # set (offset paging cannot prevent it), but they never count one twice.
    window = fetch(client_for(api, page_size=10, parallel_pages=4))
    ids = [t.task_id for t in window.tasks]
    assert len(ids) == len(set(ids))


def test_total_count_is_only_a_hint_for_the_window_size(
    simulator: Callable[..., SimulatedApi], client_for: Callable[..., ApiClient]
) -> None:
    api = simulator(StaticDataset({TARGET: served(200)}))
    api.total_count_error = -190  # says one page, there are twenty
    window = fetch(client_for(api, page_size=10, parallel_pages=8))
    assert len(window.tasks) == 200
    assert api.request_count() <= math.ceil(200 / 10) + 8
