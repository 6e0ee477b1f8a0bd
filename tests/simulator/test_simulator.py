"""Tests of the simulated UCDN API: real servers on loopback, real HTTP, real sockets."""

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import url_entry
from simdata import url_domain
from simfaults import Faults, SimulatedApi

from exporter.gateway.signature import ParamValue, sign, signed_form
from exporter.simulator.live import LiveDataset
from exporter.simulator.protocol import (
    ACTION,
    DEMO_PRIVATE_KEY,
    DEMO_PUBLIC_KEY,
    REQUEST_ID_HEADER,
    RESPONSE_ACTION,
    Target,
    Task,
)
from exporter.simulator.query import target_of
from exporter.simulator.static import StaticDataset, generate_tasks

NOW = 1_700_000_000
DEFAULT: Target = ("", False)
PROJECT_DCDN: Target = ("org-7", True)
TIMEOUT = (2, 5)  # generous: did-not-hang bounds, not timing claims


def make_task(task_id: str, create_time: int, status: str = "success") -> Task:
    url = url_entry(
        f"https://cdn.example.com/{task_id}.bin",
        status,
        create_time,
        finish=create_time + 30 if status in ("success", "failure") else 0,
        progress=100 if status == "success" else 40,
    )
    return {"TaskId": task_id, "CreateTime": create_time, "Status": status, "UrlLists": [url]}


def default_tasks() -> list[Task]:
    statuses = ["success", "failure", "process", "wait", "unknow"]
    return [make_task(f"t{i:03d}", NOW - 60 * i, statuses[i % 5]) for i in range(50)]


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    dataset = StaticDataset(
        {
            DEFAULT: default_tasks(),
            PROJECT_DCDN: [make_task("dcdn-1", NOW - 10), make_task("dcdn-2", NOW - 20)],
            ("org-7", False): [make_task("cdn-1", NOW - 30)],
        }
    )
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, clock=lambda: NOW) as server:
        yield server


def signed(**params: ParamValue) -> dict[str, str]:
    return signed_form({"Action": ACTION, **params}, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)


def call(api: SimulatedApi, **params: ParamValue) -> dict[str, Any]:
    response = requests.post(api.url, data=signed(**params), timeout=TIMEOUT)
    assert response.status_code == 200
    return dict(response.json())


def task_ids(answer: dict[str, Any]) -> list[str]:
    return [task["TaskId"] for task in answer["TaskList"]]


# --- wire protocol and signature


def send(api: SimulatedApi, encoding: str, params: dict[str, ParamValue]) -> requests.Response:
    form = signed_form(params, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
    if encoding == "query":
        return requests.get(api.url, params=form, timeout=TIMEOUT)
    if encoding == "form":
        return requests.post(api.url, data=form, timeout=TIMEOUT)
    # JSON keeps the values typed; the server signs what it reads through wire_value.
    body = {**params, "PublicKey": form["PublicKey"], "Signature": form["Signature"]}
    return requests.post(api.url, json=body, timeout=TIMEOUT)


@pytest.mark.parametrize("encoding", ["query", "form", "json"])
def test_a_signed_request_is_answered_in_every_encoding(api: SimulatedApi, encoding: str) -> None:
    params: dict[str, ParamValue] = {
        "Action": ACTION,
        "ProjectId": "org-7",
        "IsDcdn": True,
        "Limit": 10,
    }
    response = send(api, encoding, params)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["Action"] == RESPONSE_ACTION
    assert answer["RetCode"] == 0
    assert task_ids(answer) == ["dcdn-1", "dcdn-2"]
    (record,) = api.requests
    assert record.encoding == encoding
    assert record.params["IsDcdn"] == "true"
    assert record.target == PROJECT_DCDN


@pytest.mark.parametrize("encoding", ["query", "form", "json"])
def test_a_tampered_request_is_rejected_in_every_encoding(api: SimulatedApi, encoding: str) -> None:
    params: dict[str, ParamValue] = {"Action": ACTION, "Limit": 10}
    form = signed_form(params, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
    tampered = {**form, "Limit": "11"}
    if encoding == "query":
        response = requests.get(api.url, params=tampered, timeout=TIMEOUT)
    elif encoding == "form":
        response = requests.post(api.url, data=tampered, timeout=TIMEOUT)
    else:
        response = requests.post(api.url, json={**tampered, "Limit": 11}, timeout=TIMEOUT)
    assert response.status_code == 200  # the gateway reports errors in the body
    answer = response.json()
    assert answer["RetCode"] == 171
    assert answer["Message"]
    assert "TaskList" not in answer


def test_a_json_boolean_signed_as_python_writes_it_is_rejected(api: SimulatedApi) -> None:
    wrongly_signed = {"Action": ACTION, "IsDcdn": "False", "PublicKey": DEMO_PUBLIC_KEY}
    signature = sign(wrongly_signed, DEMO_PRIVATE_KEY)
    body = {"Action": ACTION, "IsDcdn": False, "PublicKey": DEMO_PUBLIC_KEY, "Signature": signature}
    answer = requests.post(api.url, json=body, timeout=TIMEOUT).json()
    assert answer["RetCode"] == 171


def test_json_floats_are_signed_as_wire_value_writes_them(api: SimulatedApi) -> None:
    assert send(api, "json", {"Action": ACTION, "Limit": 5.0}).json()["RetCode"] == 0


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"Signature": ""}, 171),
        ({"PublicKey": "someone-else"}, 171),
        ({"Action": "DescribeUHostInstance"}, 161),
        ({"Action": ""}, 160),
    ],
)
def test_auth_and_action_errors(api: SimulatedApi, change: dict[str, str], code: int) -> None:
    form = {**signed(Limit=1), **change}
    answer = requests.post(api.url, data=form, timeout=TIMEOUT).json()
    assert answer == {"Action": RESPONSE_ACTION, "RetCode": code, "Message": answer["Message"]}


def test_a_missing_action_or_signature_is_an_error(api: SimulatedApi) -> None:
    form = signed(Limit=1)
    answers = {
        name: requests.post(
            api.url, data={k: v for k, v in form.items() if k != name}, timeout=TIMEOUT
        ).json()
        for name in ("Action", "Signature")
    }
    assert answers["Action"] == {
        "Action": RESPONSE_ACTION,
        "RetCode": 160,
        "Message": "Missing Action",
    }
    assert answers["Signature"]["RetCode"] == 171


def test_an_unknown_action_is_named_in_the_message(api: SimulatedApi) -> None:
    answer = requests.post(api.url, data={**signed(), "Action": "NoSuchThing"}, timeout=TIMEOUT)
    assert answer.json()["Message"] == "Action [NoSuchThing] not exist"


def test_every_answer_carries_its_own_request_id(api: SimulatedApi) -> None:
    api.faults.http_error(503, times=1)
    api.faults.ret_code(153, "rate limit", times=1)
    answers = [requests.post(api.url, data=signed(), timeout=TIMEOUT) for _ in range(3)]
    assert [response.status_code for response in answers] == [503, 200, 200]
    ids = [response.headers[REQUEST_ID_HEADER] for response in answers]
    # The server's own 400, for a request it cannot read, carries one too.
    head = _raw_request(api, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400")
    ids += [
        line.split(b":", 1)[1].strip().decode()
        for line in head.splitlines()
        if line.lower().startswith(REQUEST_ID_HEADER.lower().encode())
    ]
    assert len(ids) == 4
    assert all(uuid.UUID(request_id).version == 4 for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_fault_may_set_the_request_id(api: SimulatedApi) -> None:
    api.faults.http_error(502, headers={REQUEST_ID_HEADER: "not a uuid"}, times=1)
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT)
    assert response.headers[REQUEST_ID_HEADER] == "not a uuid"
    assert requests.post(api.url, data=signed(), timeout=TIMEOUT).headers[REQUEST_ID_HEADER]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"Action": null}', b'{"Action": ["x"]}'],
)
def test_an_unreadable_json_body_is_an_error(api: SimulatedApi, body: bytes) -> None:
    response = requests.post(
        api.url, data=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert response.json()["RetCode"] == 230


# --- query semantics


def test_paging_with_offset_and_limit_covers_every_task_exactly_once(api: SimulatedApi) -> None:
    everything = call(api)
    assert everything["TotalCount"] == 50
    assert len(everything["TaskList"]) == 50
    pages = [call(api, Offset=offset, Limit=7) for offset in range(0, 56, 7)]
    seen = [task_id for page in pages for task_id in task_ids(page)]
    assert seen == task_ids(everything)
    assert len(set(seen)) == 50
    assert [len(page["TaskList"]) for page in pages][-2:] == [7, 1]
    assert all(page["TotalCount"] == 50 for page in pages)
    assert call(api, Offset=50, Limit=7)["TaskList"] == []


def test_tasks_come_newest_first_then_by_task_id() -> None:
    tasks = [make_task("b", NOW - 5), make_task("a", NOW - 5), make_task("c", NOW - 1)]
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, StaticDataset({DEFAULT: tasks}), clock=lambda: NOW
    ) as server:
        assert task_ids(call(server)) == ["c", "a", "b"]


def test_the_window_defaults_to_the_last_day_and_bounds_are_inclusive() -> None:
    tasks = [make_task(f"at-{age}", NOW - age) for age in (0, 100, 86400, 86401)]
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, StaticDataset({DEFAULT: tasks}), clock=lambda: NOW
    ) as server:
        assert task_ids(call(server)) == ["at-0", "at-100", "at-86400"]
        assert task_ids(call(server, BeginTime=NOW - 100, EndTime=NOW - 100)) == ["at-100"]
        assert task_ids(call(server, BeginTime=NOW - 90000)) == [t["TaskId"] for t in tasks]
        answer = call(server, EndTime=NOW)
        assert answer["RetCode"] == 230
        assert "BeginTime" in answer["Message"]


def test_status_and_task_id_filters(api: SimulatedApi) -> None:
    failed = call(api, Status="failure")
    assert failed["TotalCount"] == 10
    assert {task["Status"] for task in failed["TaskList"]} == {"failure"}
    assert call(api, Status="unknow")["TotalCount"] == 10
    wanted = call(api, **{"TaskId.0": "t003", "TaskId.1": "t010", "TaskId.2": "nope"})
    assert task_ids(wanted) == ["t003", "t010"]
    both = call(api, Status="failure", **{"TaskId.0": "t001", "TaskId.1": "t003"})
    assert task_ids(both) == ["t001"]


def test_project_and_platform_select_the_target(api: SimulatedApi) -> None:
    assert task_ids(call(api, ProjectId="org-7", IsDcdn=True)) == ["dcdn-1", "dcdn-2"]
    assert task_ids(call(api, ProjectId="org-7", IsDcdn=False)) == ["cdn-1"]
    assert task_ids(call(api, ProjectId="org-7")) == ["cdn-1"]
    assert call(api, IsDcdn=True)["TotalCount"] == 0
    assert call(api, ProjectId="elsewhere")["TaskList"] == []
    assert call(api, IsDcdn="False")["RetCode"] == 230


@pytest.mark.parametrize("change", [{"Offset": "-1"}, {"Limit": "ten"}, {"BeginTime": "x"}])
def test_bad_numbers_are_parameter_errors(api: SimulatedApi, change: dict[str, str]) -> None:
    assert call(api, **change)["RetCode"] == 230


def test_total_count_can_be_made_to_lie(api: SimulatedApi) -> None:
    api.total_count_error = -46
    low = call(api, Limit=100)
    assert (low["TotalCount"], len(low["TaskList"])) == (4, 50)
    api.total_count_error = 1000
    assert call(api, Limit=10)["TotalCount"] == 1050


def test_a_static_dataset_can_change_between_pages(api: SimulatedApi) -> None:
    first = call(api, Limit=10)
    dataset = api.dataset
    assert isinstance(dataset, StaticDataset)
    dataset.set_tasks(DEFAULT, [make_task("newer", NOW), *default_tasks()])
    second = call(api, Offset=10, Limit=10)
    # Offset paging over a growing set repeats a task: what the exporter must survive.
    assert task_ids(first)[-1] == task_ids(second)[0] == "t009"


def test_tasks_without_a_usable_create_time_are_in_every_window() -> None:
    odd = {"TaskId": "odd", "CreateTime": "yesterday", "Status": "success", "UrlLists": []}
    dataset = StaticDataset({DEFAULT: [odd, make_task("ok", NOW)]})
    assert [task["TaskId"] for task in dataset.tasks(DEFAULT, 0, 1)] == ["odd"]
    assert [task["TaskId"] for task in dataset.tasks(DEFAULT, NOW, NOW)] == ["ok", "odd"]


def test_target_of_reads_project_and_platform() -> None:
    assert target_of({}) == ("", False)
    assert target_of({"ProjectId": "p", "IsDcdn": "true"}) == ("p", True)
    assert target_of({"IsDcdn": "1"}) is None


# --- the live dataset


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def day_of(dataset: LiveDataset, target: Target = DEFAULT, now: int = NOW) -> list[Task]:
    return dataset.tasks(target, now - 86400, now)


def test_live_state_is_a_function_of_seed_target_and_time() -> None:
    first = day_of(LiveDataset(7, clock=lambda: NOW))
    again = day_of(LiveDataset(7, clock=lambda: NOW))
    assert first == again
    assert first != day_of(LiveDataset(8, clock=lambda: NOW))
    other_target = LiveDataset(7, clock=lambda: NOW).tasks(PROJECT_DCDN, NOW - 86400, NOW)
    assert {t["TaskId"] for t in other_target}.isdisjoint({t["TaskId"] for t in first})


def test_live_history_covers_a_day_with_a_task_every_30_to_90_seconds() -> None:
    tasks = day_of(LiveDataset(0, clock=lambda: NOW))
    created = [task["CreateTime"] for task in tasks]
    assert created == sorted(created, reverse=True)
    assert NOW - created[0] <= 90
    assert created[-1] - (NOW - 86400) <= 90
    gaps = [newer - older for newer, older in itertools.pairwise(created)]
    assert min(gaps) >= 30
    assert max(gaps) <= 90
    assert len({task["TaskId"] for task in tasks}) == len(tasks)
    assert all(1 <= len(task["UrlLists"]) <= 20 for task in tasks)
    live_hosts = {domain.name for domain in LiveDataset(0).domains("")}
    assert all(
        url_domain(url["Url"]) in live_hosts and "/releases/v" in url["Url"]
        for task in tasks
        for url in task["UrlLists"]
    )


def test_new_live_tasks_appear_as_time_passes() -> None:
    clock = FakeClock(NOW)
    dataset = LiveDataset(0, clock=clock)
    before = {task["TaskId"] for task in dataset.tasks(DEFAULT, NOW - 3600, NOW + 3600)}
    clock.now = NOW + 600
    after = {task["TaskId"] for task in dataset.tasks(DEFAULT, NOW - 3600, NOW + 3600)}
    assert before < after
    assert 600 // 90 <= len(after - before) <= 600 // 30 + 1


PHASE_ORDER = {"wait": 0, "process": 1, "success": 2, "failure": 2}


def test_live_urls_move_from_wait_through_process_to_an_end() -> None:
    clock = FakeClock(NOW)
    # Two days of history: a stuck URL may run 30 h, past the default day's lookback.
    dataset = LiveDataset(3, clock=clock, history=2 * 86400)
    # Follow the tasks created in the next ten minutes: closely at first, then for two days.
    window = (NOW, NOW + 600)
    moments = [*range(NOW, NOW + 1800, 5), *range(NOW + 1800, NOW + 2 * 86400, 600)]
    history: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for moment in moments:
        clock.now = moment
        for task in dataset.tasks(DEFAULT, *window):
            for url in task["UrlLists"]:
                history.setdefault((task["TaskId"], url["Url"]), []).append(url)
    assert len({task_id for task_id, _ in history}) >= 600 // 90
    seen: Counter[str] = Counter()
    for states in history.values():
        real = [state for state in states if state["Status"] in PHASE_ORDER]
        if len(real) < len(states):
            continue  # an anomalous status hides this URL's phase
        order = [PHASE_ORDER[state["Status"]] for state in real]
        assert order == sorted(order)
        seen.update(state["Status"] for state in real)
        for state in real:
            if state["Status"] in ("wait", "process"):
                assert state["FinishTime"] == 0
                assert 0 <= state["Progress"] <= 99
            else:
                assert state["FinishTime"] != 0
        progress = [s["Progress"] for s in real if s["Status"] in ("wait", "process")]
        assert progress == sorted(progress)
        assert real[-1]["Status"] in ("success", "failure")  # everything ends within two days
        assert len({state["Status"] for state in real} & {"success", "failure"}) == 1
    assert seen["wait"] and seen["process"] and seen["success"] and seen["failure"]


def test_live_task_status_follows_its_urls() -> None:
    for task in day_of(LiveDataset(1, clock=lambda: NOW)):
        statuses = {url["Status"] for url in task["UrlLists"]}
        if task["Status"] not in PHASE_ORDER or not statuses <= set(PHASE_ORDER):
            continue  # an anomaly: the derivation is hidden
        if statuses == {"wait"}:
            expected = "wait"
        elif statuses & {"wait", "process"}:
            expected = "process"
        else:
            expected = "failure" if "failure" in statuses else "success"
        assert task["Status"] == expected


def test_a_live_day_has_the_providers_anomalies_and_work_in_flight() -> None:
    tasks = day_of(LiveDataset(0, clock=lambda: NOW))
    urls = [url for task in tasks for url in task["UrlLists"]]
    known = set(PHASE_ORDER) | {"unknow"}
    assert any(url["Status"] == "unknow" for url in urls)
    assert any(url["Status"] not in known for url in urls)
    assert any(task["Status"] == "unknow" for task in tasks)
    assert any(task["Status"] not in known for task in tasks)
    assert any(0 < url["FinishTime"] < url["CreateTime"] for url in urls)
    assert any(url["Progress"] > 100 for url in urls)
    anomalies = sum(1 for url in urls if url["Status"] not in known or url["Progress"] > 100)
    assert anomalies < len(urls) * 0.02  # low rates: the data stays mostly sane
    unfinished = [task for task in tasks if task["Status"] in ("wait", "process")]
    assert unfinished
    assert NOW - min(task["CreateTime"] for task in unfinished) > 6 * 3600
    failed = sum(1 for url in urls if url["Status"] == "failure")
    assert 0.02 < failed / len(urls) < 0.1


def test_live_completion_times_are_mostly_seconds_to_half_an_hour() -> None:
    tasks = day_of(LiveDataset(0, clock=lambda: NOW))
    durations = [
        url["FinishTime"] - url["CreateTime"]
        for task in tasks
        for url in task["UrlLists"]
        if url["FinishTime"] >= url["CreateTime"] and url["Status"] == "success"
    ]
    within = sum(1 for duration in durations if 10 <= duration <= 1800 + 600)
    assert within / len(durations) > 0.8
    assert max(durations) > 3600


# --- generate_tasks


def test_generate_tasks_makes_a_large_realistic_set_quickly() -> None:
    started = time.monotonic()
    tasks = generate_tasks(2000, 50, now=NOW, seed=5)
    assert time.monotonic() - started < 10  # about a second; generous on a shared machine
    assert len(tasks) == 2000
    assert all(len(task["UrlLists"]) == 50 for task in tasks)
    assert len({task["TaskId"] for task in tasks}) == 2000
    assert all(NOW - 86400 < task["CreateTime"] <= NOW for task in tasks)
    statuses = Counter(task["Status"] for task in tasks)
    assert set(statuses) == {"success", "failure", "process", "wait", "unknow"}
    assert statuses.most_common(1)[0][0] == "success"
    for task in tasks:
        for url in task["UrlLists"]:
            assert url["FinishTime"] <= NOW
            assert (url["FinishTime"] == 0) == (url["Status"] in ("wait", "process"))
    assert generate_tasks(20, 3, now=NOW, seed=5) == generate_tasks(20, 3, now=NOW, seed=5)


def test_generated_tasks_respect_the_lookback() -> None:
    tasks = generate_tasks(200, 1, now=NOW, lookback=600)
    assert all(NOW - 600 < task["CreateTime"] <= NOW for task in tasks)


# --- faults


@pytest.mark.e2e  # seconds on loopback by design
def test_delay_holds_each_answer_and_requests_run_in_parallel(api: SimulatedApi) -> None:
    api.faults.delay(0.5)
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: call(api, Limit=5), range(20)))
    elapsed = time.monotonic() - started
    assert all(answer["RetCode"] == 0 for answer in answers)
    assert elapsed >= 0.5
    assert elapsed < 8  # one after another would take 10 s
    assert api.request_count() == 20


def test_stop_interrupts_a_delay_promptly(api: SimulatedApi) -> None:
    api.faults.delay(60)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            requests.post(api.url, data=signed(), timeout=(2, 120))
        except requests.RequestException as error:
            outcome.append(error)

    client = threading.Thread(target=ask)
    client.start()
    wait_for(lambda: api.request_count() == 1)
    started = time.monotonic()
    api.stop()
    client.join(30)
    assert not client.is_alive()
    assert time.monotonic() - started < 10
    assert isinstance(outcome[0], requests.ConnectionError)


def wait_for(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_http_error_with_retry_after(api: SimulatedApi) -> None:
    api.faults.http_error(503, retry_after="3600", times=1)
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3600"
    assert "503 Service Unavailable" in response.text
    assert response.headers["Content-Type"].startswith("text/html")
    assert requests.post(api.url, data=signed(), timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("status", [429, 500, 502])
def test_http_error_with_a_custom_body(api: SimulatedApi, status: int) -> None:
    api.faults.http_error(status, body="<h1>Bad Gateway</h1>")
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT)
    assert response.status_code == status
    assert response.text == "<h1>Bad Gateway</h1>"
    assert "Retry-After" not in response.headers


def test_bad_json_is_not_json(api: SimulatedApi) -> None:
    api.faults.bad_json()
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.text.startswith('{"Action"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_html_page_instead_of_json(api: SimulatedApi) -> None:
    api.faults.html_page()
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text


def test_ret_code(api: SimulatedApi) -> None:
    api.faults.ret_code(8000, "internal error")
    assert call(api) == {"Action": RESPONSE_ACTION, "RetCode": 8000, "Message": "internal error"}


@pytest.mark.parametrize(
    ("variant", "check"),
    [
        ("task_list_string", lambda a: isinstance(a["TaskList"], str)),
        ("progress_string", lambda a: a["TaskList"][0]["UrlLists"][0]["Progress"] == "abc"),
        ("huge_numbers", lambda a: a["TotalCount"] > 2**64),
        ("negative_times", lambda a: a["TaskList"][0]["CreateTime"] < 0),
        ("null_fields", lambda a: a["TaskList"][0]["UrlLists"] is None),
        ("missing_fields", lambda a: "TaskId" not in a["TaskList"][0] and "TotalCount" not in a),
    ],
)
def test_wrong_types(api: SimulatedApi, variant: Any, check: Any) -> None:
    api.faults.wrong_types(variant, times=1)
    assert check(call(api))
    # The dataset itself is untouched.
    assert call(api)["TaskList"][0] == default_tasks()[0]


def raw_request(api: SimulatedApi, timeout: float = 5) -> socket.socket:
    body = "&".join(f"{name}={value}" for name, value in signed(Limit=1).items())
    host, port = api.url.removeprefix("http://").rstrip("/").split(":")
    connection = socket.create_connection((host, int(port)), timeout=timeout)
    connection.sendall(
        (
            f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded"
            f"\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    return connection


def test_reset_sends_a_tcp_rst(api: SimulatedApi) -> None:
    api.faults.reset(times=2)
    with pytest.raises(requests.ConnectionError):
        requests.post(api.url, data=signed(), timeout=TIMEOUT)
    with raw_request(api) as connection, pytest.raises(ConnectionResetError):
        connection.recv(1024)


def test_close_without_answer_closes_cleanly(api: SimulatedApi) -> None:
    api.faults.close_without_answer(times=2)
    with pytest.raises(requests.ConnectionError):
        requests.post(api.url, data=signed(), timeout=TIMEOUT)
    with raw_request(api) as connection:
        assert connection.recv(1024) == b""  # FIN, not RST, and no answer


@pytest.mark.e2e  # seconds on loopback by design
def test_drip_sends_headers_then_the_body_slowly(api: SimulatedApi) -> None:
    api.faults.drip(10)
    with raw_request(api, timeout=0.3) as connection:
        received = b""
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length")).split(
            b":"
        )[1]
    )
    assert 0 < len(body) < length
    assert len(body) <= 40  # 10 bytes a second for 1.5 s, with room for a slow machine


def test_a_fast_drip_delivers_the_whole_answer(api: SimulatedApi) -> None:
    api.faults.drip(5000, target=("org-7", False))
    answer = call(api, ProjectId="org-7", Limit=1)
    assert task_ids(answer) == ["cdn-1"]


@pytest.mark.e2e  # seconds on loopback by design
def test_hang_never_answers_until_stop(api: SimulatedApi) -> None:
    api.faults.hang()
    with pytest.raises(requests.ReadTimeout):
        requests.post(api.url, data=signed(), timeout=(2, 0.5))
    with raw_request(api, timeout=10) as connection:
        wait_for(lambda: api.request_count() == 2)
        started = time.monotonic()
        api.stop()
        assert connection.recv(1024) == b""
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("content_length", [True, False])
def test_oversized_streams_a_valid_body_of_the_asked_size(
    api: SimulatedApi, content_length: bool
) -> None:
    size = 3 * 1024 * 1024 + 7
    api.faults.oversized(size, content_length=content_length)
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT, stream=True)
    assert response.status_code == 200
    assert ("Content-Length" in response.headers) == content_length
    body = b"".join(response.iter_content(65536))
    assert len(body) == size
    answer = json.loads(body)
    assert answer["RetCode"] == 0
    assert len({task["TaskId"] for task in answer["TaskList"]}) == len(answer["TaskList"]) > 100


def test_a_small_oversized_body_is_still_valid_json(api: SimulatedApi) -> None:
    api.faults.oversized(100)
    response = requests.post(api.url, data=signed(), timeout=TIMEOUT)
    assert len(response.content) == 100
    assert response.json()["TaskList"] == []


def test_times_n_expires_and_faults_run_in_the_order_added(api: SimulatedApi) -> None:
    api.faults.http_error(500, times=2)
    api.faults.ret_code(172, "later", times=1)
    statuses = [requests.post(api.url, data=signed(), timeout=TIMEOUT) for _ in range(4)]
    assert [response.status_code for response in statuses] == [500, 500, 200, 200]
    assert [response.json()["RetCode"] for response in statuses[2:]] == [172, 0]


def test_faults_for_one_target_leave_the_others_alone(api: SimulatedApi) -> None:
    api.faults.http_error(502, target=PROJECT_DCDN)
    api.faults.delay(0.2, target=PROJECT_DCDN, times=1)
    dcdn = requests.post(api.url, data=signed(ProjectId="org-7", IsDcdn=True), timeout=TIMEOUT)
    assert dcdn.status_code == 502
    assert call(api, ProjectId="org-7")["RetCode"] == 0
    assert call(api)["RetCode"] == 0
    api.faults.clear()
    assert call(api, ProjectId="org-7", IsDcdn=True)["RetCode"] == 0


def test_faults_from_an_offset_leave_the_pages_before_it_alone(api: SimulatedApi) -> None:
    api.faults.ret_code(153, "rate limited", from_offset=20)
    api.faults.delay(0.5, from_offset=40)
    answers = {offset: call(api, Offset=offset, Limit=10) for offset in (0, 10, 20, 30)}
    assert [answers[offset]["RetCode"] for offset in (0, 10, 20, 30)] == [0, 0, 153, 153]
    started = time.monotonic()
    assert call(api, Offset=40, Limit=10)["RetCode"] == 153
    assert time.monotonic() - started >= 0.45


def _raw_request(api: SimulatedApi, request: bytes) -> bytes:
    """Send ``request`` as it is; the whole answer as bytes, up to the connection's close."""
    host, port = api.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _raw_post(api: SimulatedApi, form: dict[str, str]) -> bytes:
    """The whole answer as bytes: requests would hide a header line without a colon."""
    body = "&".join(f"{name}={value}" for name, value in form.items()).encode()
    return _raw_request(
        api,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )


@pytest.mark.parametrize("upper", [False, True], ids=["lower", "upper"])
def test_echo_signature_quotes_this_and_the_previous_signature(
    api: SimulatedApi, upper: bool
) -> None:
    first, second = signed(Limit=1)["Signature"], signed(Limit=2)["Signature"]
    if upper:
        first, second = first.upper(), second.upper()
    call(api, Limit=1)
    api.faults.echo_signature("message", upper=upper, times=1)
    api.faults.echo_signature("header", upper=upper, times=1)
    api.faults.echo_signature("malformed_header", upper=upper, times=1)
    answer = requests.post(api.url, data=signed(Limit=2), timeout=TIMEOUT).json()
    assert answer["RetCode"] == 171
    assert answer["Message"] == f"Signature VerifyAC Error: {first} {second}"
    echoed = requests.post(api.url, data=signed(Limit=2), timeout=TIMEOUT)
    assert echoed.json()["RetCode"] == 0
    assert echoed.headers["X-Echo-Signature"] == f"{second} {second}"
    head, _, body = _raw_post(api, signed(Limit=2)).partition(b"\r\n\r\n")
    # The last header line has no colon: a client's header parser stumbles on it.
    assert head.splitlines()[-1] == f"Signature {second} {second}".encode()
    assert json.loads(body)["RetCode"] == 0


def test_fault_arguments_are_checked() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="times"):
        faults.bad_json(times=0)
    with pytest.raises(ValueError, match="bytes_per_second"):
        faults.drip(0)
    with pytest.raises(ValueError, match="n_bytes"):
        faults.oversized(10)
    with pytest.raises(ValueError, match="variant"):
        faults.wrong_types("nonsense")  # type: ignore[arg-type]


# --- request log


def test_the_request_log_counts_by_target(api: SimulatedApi) -> None:
    before = time.monotonic()
    call(api)
    call(api, ProjectId="org-7", IsDcdn=True)
    call(api, ProjectId="org-7", IsDcdn=True)
    requests.get(api.url, params=signed(ProjectId="org-7"), timeout=TIMEOUT)
    requests.post(api.url, data=signed(IsDcdn="yes"), timeout=TIMEOUT)
    assert api.request_count() == 5
    assert api.request_count(project_id="org-7") == 3
    assert api.request_count(project_id="org-7", is_dcdn=True) == 2
    assert api.request_count(is_dcdn=False) == 2
    assert api.request_count(project_id="") == 1
    records = api.requests
    assert [record.method for record in records] == ["POST", "POST", "POST", "GET", "POST"]
    assert records[-1].target is None
    assert before <= records[0].received <= records[-1].received <= time.monotonic()
    assert records[0].path == "/"  # a POST keeps its signed parameters out of the URL
    assert "Signature=" in records[3].path
    api.reset_log()
    assert api.requests == []
    assert api.request_count() == 0


# --- command line


@pytest.mark.e2e
def test_command_line_serves_generated_tasks_until_sigterm() -> None:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.simulator",
            "--listen",
            "127.0.0.1:0",
            "--tasks",
            "30",
            "--urls-per-task",
            "2",
            "--delay",
            "0.1",
            "--seed",
            "4",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        form = signed_form({"Action": ACTION, "Limit": 100}, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
        answer = requests.post(url, data=form, timeout=TIMEOUT).json()
        assert answer["TotalCount"] == 30
        assert all(len(task["UrlLists"]) == 2 for task in answer["TaskList"])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


@pytest.mark.e2e
def test_command_line_rejects_a_bad_listen_address() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.simulator", "--listen", "nowhere"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 2
    assert "host:port" in result.stderr
