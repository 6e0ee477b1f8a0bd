"""Tasks that come back byte for byte as the store holds them are not decoded again.

A full sync re-reads the whole window, but a task finished long ago comes back the same
on every one: its JSON's hash finds it among the store's keys, and it is carried over
as it was. These tests pin what that may and may not change: the figures are a full
fetch's, a changed task is decoded whatever its TaskId, an invalid task is an invalid
answer as before, and nothing the gateway sends can set a key.
"""

import json
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from conftest import url_entry
from pydantic import SecretStr
from simworld import World, fetch_window, task

from exporter.collection.finished_counts import FinishedCounts
from exporter.collection.kinds import TaskKind
from exporter.collection.store import TaskStore
from exporter.collection.sync import SyncOptions, TaskSync
from exporter.gateway.answers import (
    PREFETCH_ACTION,
    InvalidResponseError,
    KnownTask,
    RawTaskListResponse,
    TaskInfo,
    decode_tasks,
)
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset
from exporter.summary.target_summary import SummaryLimits, summarize

NOW = 1_790_000_000
LOOKBACK = 1000
LIMITS = SummaryLimits(max_url_series=5, max_task_series=5, buckets=(10.0, 100.0))
KIND = TaskKind.named("prefetch", LIMITS)


def raw_tasks(*entries: dict[str, Any]) -> list[msgspec.Raw]:
    body = json.dumps({"RetCode": 0, "TaskList": list(entries)}).encode()
    return msgspec.json.decode(body, type=RawTaskListResponse).task_list


def finished(task_id: str, created: int = NOW - 100) -> dict[str, Any]:
    urls = [url_entry(f"https://a.example/{task_id}", "success", created, created + 7)]
    return task(task_id, created, "success", urls)


def waiting(task_id: str, created: int = NOW - 100) -> dict[str, Any]:
    return task(task_id, created, "wait", [url_entry(f"https://a.example/{task_id}", "wait")])


def test_a_task_whose_json_hashes_to_a_known_key_is_not_decoded() -> None:
    first, second = raw_tasks(finished("a"), finished("b"))
    known = {hash(bytes(second)): "b"}
    decoded = decode_tasks([first, second], known)
    assert decoded[1] == KnownTask("b", hash(bytes(second)))
    assert isinstance(decoded[0], TaskInfo)
    assert decoded[0].task_id == "a"
    assert decoded[0].key == hash(bytes(first))


def test_what_the_gateway_sends_as_a_key_is_neither_trusted_nor_an_error() -> None:
    for sent in (12345, "not a number", {"nested": [1, 2]}, None):
        (raw,) = raw_tasks({**finished("a"), "_key": sent})
        (decoded,) = decode_tasks([raw], {12345: "b"})
        assert isinstance(decoded, TaskInfo)
        assert decoded.key == hash(bytes(raw))


def test_a_task_that_is_not_an_object_is_named_by_its_place_as_a_whole_answer_would_be() -> None:
    raws = msgspec.json.decode(
        b'{"RetCode": 0, "TaskList": [{"TaskId": "a"}, 1]}', type=RawTaskListResponse
    ).task_list
    with pytest.raises(InvalidResponseError) as raised:
        decode_tasks(raws, {})
    assert str(raised.value) == "Expected `object`, got `int` - at `$.TaskList[1]`"


def test_an_invalid_task_is_an_invalid_answer_naming_where_it_is() -> None:
    api = SimulatedApi(
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        StaticDataset({("shop", False): [finished("a"), {**finished("b"), "CreateTime": "x"}]}),
    ).start()
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
    try:
        with pytest.raises(ApiError) as raised:
            client.fetch_tasks(
                "shop",
                is_dcdn=False,
                begin=NOW - LOOKBACK,
                end=NOW,
                deadline=Deadline.after(10),
                known={},
            )
        assert raised.value.reason == "invalid_response"
        assert "$.TaskList[1].CreateTime" in raised.value.detail
        # counted as what it was, not as an answer that came back fine
        assert client.stats.snapshot()[PREFETCH_ACTION, "invalid_response"] == 1
        assert client.stats.snapshot().get((PREFETCH_ACTION, "ok"), 0) == 0
    finally:
        client.close()
        api.stop()


@pytest.fixture
def gateway() -> Iterator[tuple[World, ApiClient, Callable[[], TaskSync]]]:
    world = World()
    api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, world).start()
    client = ApiClient(
        api.url,
        DEMO_PUBLIC_KEY,
        SecretStr(DEMO_PRIVATE_KEY),
        options=ClientOptions(page_size=2, parallel_pages=2),
    )
    options = SyncOptions(lookback_seconds=LOOKBACK, resync_seconds=0)

    def syncing() -> TaskSync:
        return TaskSync(client, Target("shop", "cdn"), KIND, options, wall_clock=lambda: NOW)

    yield world, client, syncing
    client.close()
    api.stop()


def test_full_syncs_carry_unchanged_tasks_over_and_give_a_full_fetchs_figures(
    gateway: tuple[World, ApiClient, Callable[[], TaskSync]],
) -> None:
    world, client, syncing = gateway
    for entry in (finished("a"), finished("b", NOW - 300), waiting("c"), finished("d", NOW - 900)):
        world.put(entry)
    sync = syncing()
    sync.collect(Deadline.after(10))
    world.put({**waiting("c"), "Status": "process"})  # moving on
    world.put(finished("e", NOW - 50))  # new
    world.put({**finished("b", NOW - 300), "Status": "failure"})  # which the API should not do
    del world.tasks_by_id["d"]  # gone from the window
    again = sync.collect(Deadline.after(10))
    assert again.sync == "full"
    reference = summarize(fetch_window(client, NOW, LOOKBACK), LIMITS)
    assert again.summary == reference
    assert (reference.tasks_by_status["success"], reference.tasks_by_status["failure"]) == (2, 1)


def test_every_task_a_store_holds_comes_back_known_until_it_changes(
    gateway: tuple[World, ApiClient, Callable[[], TaskSync]],
) -> None:
    world, client, _ = gateway
    for entry in (finished("a"), waiting("b"), finished("c", NOW - 900)):
        world.put(entry)
    store = TaskStore(LIMITS, FinishedCounts(0.0), counting=False)
    store.add_page(fetch_window(client, NOW, LOOKBACK, {}).tasks, NOW - LOOKBACK, NOW, None)
    world.put({**waiting("b"), "Status": "process"})
    kinds = {
        item.task_id: type(item)
        for item in fetch_window(client, NOW, LOOKBACK, store.known.by_key).tasks
    }
    assert kinds == {"a": KnownTask, "b": TaskInfo, "c": KnownTask}  # b changed: decoded


class Forgetful(World):
    """A gateway that, once ``timeless``, lists every task whatever BeginTime asks for."""

    timeless = False

    def tasks(self, target: Any, begin: int, end: int) -> Any:
        return super().tasks(target, 0 if self.timeless else begin, end)


def test_a_task_that_left_the_store_is_decoded_when_a_gateway_lists_it_again() -> None:
    world = Forgetful(
        [
            finished("old", NOW - 900),
            waiting("w", NOW - 950),
            *(finished(f"f{i}") for i in range(4)),
        ]
    )
    api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, world).start()
    # Pages of one task: a full sync costs more than a collection between them.
    options = ClientOptions(page_size=1, parallel_pages=2)
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=options)
    clock = [NOW]
    sync_options = SyncOptions(lookback_seconds=LOOKBACK, resync_seconds=10**9, overlap_seconds=10)
    sync = TaskSync(client, Target("shop", "cdn"), KIND, sync_options, wall_clock=lambda: clock[0])
    try:
        sync.collect(Deadline.after(10))
        clock[0] += 200  # "old" leaves the window and the store; "w" leaves it, stuck
        world.put(finished("w", NOW - 950))  # and then finishes
        assert sync.collect(Deadline.after(10)).sync == "incremental"
        world.timeless = True  # now both are listed again, out of the window
        sync.collect(Deadline.after(10))  # which makes the store inexact: a full sync next
        collection = sync.collect(Deadline.after(10))
        assert collection.sync == "full"
        # What the gateway put in the window is in its figures, as a fetch's would be.
        assert collection.summary == summarize(fetch_window(client, clock[0], LOOKBACK), LIMITS)
        assert collection.summary.tasks_by_status["success"] == 6
    finally:
        client.close()
        api.stop()


def test_a_kept_unfinished_task_with_a_url_twice_still_counts_the_duplicate(
    gateway: tuple[World, ApiClient, Callable[[], TaskSync]],
) -> None:
    world, client, syncing = gateway
    twice = [
        url_entry("https://a.example/same", "wait"),
        url_entry("https://a.example/same", "wait"),
    ]
    world.put(task("dup", NOW - 100, "wait", twice))
    world.put(waiting("other"))
    sync = syncing()
    for _ in range(2):  # the second from the task the first kept
        collection = sync.collect(Deadline.after(10))
        assert collection.summary == summarize(fetch_window(client, NOW, LOOKBACK), LIMITS)
        assert collection.summary.anomalies["duplicate_url"] == 1
