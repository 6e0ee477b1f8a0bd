"""The rest of the family against a real loopback gateway: domains, quotas, the prefetch switch,
refresh tasks, and the request counter by action.

The gateway is a small ``http.server`` that checks each request's signature and answers
from a script per test, so that TotalCount can lie and RetCodes can be chosen.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import simdata
from pydantic import SecretStr
from simfaults import SimulatedApi

from exporter.collection.quota_sweep import QuotaSweeper
from exporter.gateway.answers import (
    ACTIONS,
    DOMAINS_ACTION,
    PREFETCH_ACTION,
    PREFETCH_ENABLE_ACTION,
    PROJECTS_ACTION,
    QUOTA_ACTION,
    REFRESH_ACTION,
)
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.domain_calls import DomainList
from exporter.gateway.outcomes import OUTCOMES, ApiError
from exporter.gateway.signature import sign
from exporter.gateway.transport import ClientOptions
from exporter.simulator.account import Project
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import StaticDataset

PUBLIC, PRIVATE = "family-public", "family-private-key-0123"
REQUEST_ID = "req-0042"
Answer = Callable[[dict[str, str]], dict[str, Any]]


class Gateway:
    """A loopback gateway: checks signatures, records forms, answers with ``answer(form)``."""

    def __init__(self, answer: Answer, delay: float = 0.0) -> None:
        self.forms: list[dict[str, str]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(size).decode()))
                gateway.forms.append(form)
                time.sleep(delay)
                if form.get("Signature") != sign(form, PRIVATE) or form["PublicKey"] != PUBLIC:
                    body = {"RetCode": 171, "Message": "signature wrong"}
                else:
                    body = answer(form)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-UCLOUD-REQUEST-UUID", REQUEST_ID)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def actions(self) -> list[str]:
        return [form["Action"] for form in self.forms]


@pytest.fixture
def family() -> Iterator[Callable[..., tuple[Gateway, ApiClient]]]:
    started: list[tuple[Gateway, ApiClient]] = []

    def start(answer: Answer, delay: float = 0.0, **options: Any) -> tuple[Gateway, ApiClient]:
        gateway = Gateway(answer, delay)
        client = ApiClient(
            gateway.url, PUBLIC, SecretStr(PRIVATE), options=ClientOptions(**options)
        )
        started.append((gateway, client))
        return gateway, client

    yield start
    for gateway, client in started:
        client.close()
        gateway.stop()


def deadline(seconds: float = 10.0) -> Deadline:
    return Deadline.after(seconds)


def domains(count: int) -> list[dict[str, str]]:
    return [{"Domain": f"d{i}.example.com", "DomainId": f"ucdn-{i:04d}"} for i in range(count)]


def domain_pages(
    data: list[dict[str, str]], total_count: Callable[[int], int | None] = lambda n: n
) -> Answer:
    """GetUcdnDomainInfoList over ``data``; ``total_count`` may lie about its length."""

    def answer(form: dict[str, str]) -> dict[str, Any]:
        assert form["Action"] == DOMAINS_ACTION
        # Without it the API lists the whole account's domains, whatever the ProjectId.
        assert form["QueryByProject"] == "true"
        size, index = int(form["PageSize"]), int(form["PageIndex"])
        assert size > 0 and index >= 1, "PageIndex 0 would ask for every domain at once"
        page = data[(index - 1) * size : index * size]
        body: dict[str, Any] = {"RetCode": 0, "Action": DOMAINS_ACTION, "DomainInfoList": page}
        told = total_count(len(data))
        if told is not None:
            body["TotalCount"] = told
        return body

    return answer


def ids(listed: DomainList) -> list[str]:
    return [domain.domain_id for domain in listed.domains]


@pytest.mark.parametrize(
    "lie", [lambda n: n, lambda n: 3, lambda n: 0, lambda n: 10_000, lambda n: None]
)
@pytest.mark.parametrize(("count", "page_size"), [(0, 5), (4, 5), (5, 5), (23, 5), (23, 1)])
def test_every_domain_once_whatever_total_count_says(
    family: Callable[..., tuple[Gateway, ApiClient]],
    count: int,
    page_size: int,
    lie: Callable[[int], int | None],
) -> None:
    data = domains(count)
    gateway, client = family(domain_pages(data, lie), page_size=page_size)
    listed = client.list_domains("proj-a", deadline=deadline(), limit=1000)
    assert ids(listed) == [item["DomainId"] for item in data]
    assert listed.total == max(count, lie(count) or 0)
    # One page past the data at most: the first short (or empty) page ends the listing.
    assert len(gateway.forms) == count // page_size + 1
    assert [int(form["PageIndex"]) for form in gateway.forms] == list(
        range(1, len(gateway.forms) + 1)
    )
    assert {(form["PageSize"], form["ProjectId"]) for form in gateway.forms} == {
        (str(page_size), "proj-a")
    }


def test_each_project_lists_its_own_domains_from_an_account_of_two() -> None:
    # The simulator answers as the API documents: without QueryByProject, every project's
    # list would hold all five of the account's domains.
    world = StaticDataset(
        {},
        domains={
            "org-a": simdata.domains("org-a", "a1.example.com", "a2.example.com"),
            "org-b": simdata.domains("org-b", *(f"b{i}.example.com" for i in range(3))),
        },
    )
    projects = [Project("org-a", "A", is_default=True), Project("org-b", "B")]
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, world, projects=projects) as api:
        client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
        try:
            listed = {
                project_id: client.list_domains(project_id, deadline=deadline(), limit=100)
                for project_id in ("org-a", "org-b", "")
            }
        finally:
            client.close()
    names = {project: [d.domain for d in found.domains] for project, found in listed.items()}
    assert names == {
        "org-a": ["a1.example.com", "a2.example.com"],
        "org-b": ["b0.example.com", "b1.example.com", "b2.example.com"],
        "": ["a1.example.com", "a2.example.com"],  # the default project
    }
    assert [found.total for found in listed.values()] == [2, 3, 2]


def test_limit_keeps_the_first_domains_and_reports_the_total(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    gateway, client = family(domain_pages(domains(23)), page_size=5)
    listed = client.list_domains("", deadline=deadline(), limit=7)
    assert ids(listed) == [f"ucdn-{i:04d}" for i in range(7)]
    assert listed.total == 23
    assert len(gateway.forms) == 2  # the limit was reached on the second page
    assert "ProjectId" not in gateway.forms[0]  # the default project is left out
    assert client.list_domains("", deadline=deadline(), limit=0) == DomainList([], 23)


def test_duplicates_across_pages_are_kept_once(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    # A domain added meanwhile shifts the list: page 2 repeats the last of page 1.
    data = domains(8)
    shifted = [*data[:4], data[3], *data[4:]]
    _, client = family(domain_pages(shifted, lambda n: n - 1), page_size=4)
    listed = client.list_domains("p", deadline=deadline(), limit=100)
    assert ids(listed) == [item["DomainId"] for item in data]
    assert listed.total == 8


def test_full_pages_for_ever_end_at_max_pages(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    def endless(form: dict[str, str]) -> dict[str, Any]:
        index = int(form["PageIndex"])
        page = [{"Domain": f"d{index}-{i}", "DomainId": f"{index}-{i}"} for i in range(3)]
        return {"RetCode": 0, "TotalCount": 1, "DomainInfoList": page}

    gateway, client = family(endless, page_size=3, max_pages=6)
    with pytest.raises(ApiError) as raised:
        client.list_domains("p", deadline=deadline(), limit=1000)
    assert raised.value.reason == "invalid_response"
    assert "more than 6 pages of domains" in raised.value.detail
    assert len(gateway.forms) == 6


def test_the_domain_page_size_is_capped(family: Callable[..., tuple[Gateway, ApiClient]]) -> None:
    gateway, client = family(domain_pages(domains(3)), page_size=5000)
    assert len(client.list_domains("p", deadline=deadline(), limit=10).domains) == 3
    assert gateway.forms[0]["PageSize"] == "100"


def test_a_negative_limit_is_refused(family: Callable[..., tuple[Gateway, ApiClient]]) -> None:
    gateway, client = family(domain_pages(domains(3)))
    with pytest.raises(ValueError, match="limit"):
        client.list_domains("p", deadline=deadline(), limit=-1)
    assert gateway.forms == []


def test_quota_answers_are_decoded_lax(family: Callable[..., tuple[Gateway, ApiClient]]) -> None:
    def quota(form: dict[str, str]) -> dict[str, Any]:
        assert (form["Action"], form["DomainId"], form["ProjectId"]) == (
            QUOTA_ACTION,
            "ucdn-1",
            "proj-a",
        )
        return {
            "RetCode": "0",
            "PrefetchQuota": "500",
            "SubmitPrefetchCount": 17,
            "RefreshFileQuota": 700.0,
            "SubmitRefreshFile": 3,
            "RefreshDirQuota": 20,
            "SubmitRefreshDir": 0,
        }

    _, client = family(quota)
    answer = client.domain_quota("proj-a", "ucdn-1", deadline=deadline())
    assert (answer.prefetch_quota, answer.submit_prefetch_count) == (500, 17)
    assert (answer.refresh_file_quota, answer.submit_refresh_file) == (700, 3)
    assert (answer.refresh_dir_quota, answer.submit_refresh_dir) == (20, 0)


def test_a_quota_of_the_wrong_type_is_an_invalid_response(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    _, client = family(lambda form: {"RetCode": 0, "PrefetchQuota": "lots"})
    with pytest.raises(ApiError) as raised:
        client.domain_quota("p", "ucdn-1", deadline=deadline())
    assert raised.value.reason == "invalid_response"
    assert raised.value.request_id == REQUEST_ID
    assert client.stats.snapshot()[QUOTA_ACTION, "invalid_response"] == 1


@pytest.mark.parametrize(("enable", "expected"), [(1, True), (0, False), ("1", True)])
def test_prefetch_enabled_decodes_the_switch(
    family: Callable[..., tuple[Gateway, ApiClient]], enable: object, expected: bool
) -> None:
    gateway, client = family(lambda form: {"RetCode": 0, "Enable": enable})
    assert client.prefetch_enabled("p", "ucdn-9", deadline=deadline()) is expected
    assert (gateway.forms[0]["Action"], gateway.forms[0]["DomainId"]) == (
        PREFETCH_ENABLE_ACTION,
        "ucdn-9",
    )


def test_a_switch_other_than_0_or_1_is_an_invalid_response(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    _, client = family(lambda form: {"RetCode": 0, "Enable": 2})
    with pytest.raises(ApiError) as raised:
        client.prefetch_enabled("p", "ucdn-9", deadline=deadline())
    assert (raised.value.reason, raised.value.detail) == (
        "invalid_response",
        "Enable is 2, not 0 or 1",
    )


def test_a_domain_call_without_a_domain_id_is_refused_before_sending(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    gateway, client = family(lambda form: {"RetCode": 0})
    with pytest.raises(ValueError, match="domain_id"):
        client.domain_quota("p", "", deadline=deadline())
    with pytest.raises(ValueError, match="domain_id"):
        client.prefetch_enabled("p", "", deadline=deadline())
    assert gateway.forms == []


def test_a_domain_listed_without_a_domain_id_is_left_out_and_counted(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    data = domains(5)
    data[1]["DomainId"] = data[3]["DomainId"] = ""
    # Without a TotalCount, the domains seen make the total: both are counted.
    _, client = family(domain_pages(data, lambda n: None), page_size=10)
    listed = client.list_domains("p", deadline=deadline(), limit=100)
    assert ids(listed) == ["ucdn-0000", "ucdn-0002", "ucdn-0004"]
    assert listed.total == 5


def test_a_sweep_over_a_domain_without_a_domain_id_publishes_every_other_domain(
    family: Callable[..., tuple[Gateway, ApiClient]], caplog: pytest.LogCaptureFixture
) -> None:
    data = domains(3)
    data[1]["DomainId"] = ""
    listing = domain_pages(data)

    def answer(form: dict[str, str]) -> dict[str, Any]:
        if form["Action"] == DOMAINS_ACTION:
            return listing(form)
        if form["Action"] == QUOTA_ACTION:
            return {"RetCode": 0, "PrefetchQuota": 500, "SubmitPrefetchCount": 1}
        return {"RetCode": 0, "Enable": 1}

    gateway, client = family(answer)
    sweeper = QuotaSweeper(client, ["p"])
    try:
        with caplog.at_level(logging.WARNING):
            families = sweeper.families(deadline())
    finally:
        sweeper.close()
    found = {(s.name, s.labels.get("domain")): s.value for f in families for s in f.samples}
    assert found["ucdn_domain_quota_up", None] == 1
    assert found["ucdn_domain_quota_domains_dropped", None] == 1
    published = {domain for name, domain in found if name == "ucdn_domain_prefetch_enabled"}
    assert published == {"d0.example.com", "d2.example.com"}
    assert "" not in {form.get("DomainId") for form in gateway.forms}
    assert caplog.records == []


def refresh_tasks(form: dict[str, str]) -> dict[str, Any]:
    assert form["Action"] == REFRESH_ACTION
    tasks = [
        {"TaskId": "r-1", "CreateTime": 10, "Status": "success", "Type": "dir"},
        {"TaskId": "r-2", "CreateTime": 11, "Status": "wait", "Type": "file"},
    ]
    return {"RetCode": 0, "TotalCount": 2, "TaskList": tasks[: int(form["Limit"])]}


def test_refresh_tasks_come_from_the_refresh_action(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    gateway, client = family(refresh_tasks)
    window = client.fetch_tasks(
        "p", is_dcdn=False, begin=0, end=100, deadline=deadline(), action=REFRESH_ACTION
    )
    assert [(task.task_id, task.type) for task in window.decoded()] == [
        ("r-1", "dir"),
        ("r-2", "file"),
    ]
    count = client.count_tasks(
        "p", is_dcdn=True, begin=0, end=100, deadline=deadline(), action=REFRESH_ACTION
    )
    assert count == 2
    assert gateway.actions() == [REFRESH_ACTION, REFRESH_ACTION]
    assert gateway.forms[1]["IsDcdn"] == "true"
    snapshot = client.stats.snapshot()
    assert snapshot[REFRESH_ACTION, "ok"] == 2
    assert snapshot[PREFETCH_ACTION, "ok"] == 0


def test_an_action_that_is_no_task_list_is_refused(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    gateway, client = family(refresh_tasks)
    with pytest.raises(ValueError, match="not a task list action"):
        client.fetch_tasks("p", is_dcdn=False, begin=0, end=1, deadline=deadline(), action="X")
    assert gateway.forms == []


def call(client: ApiClient, action: str) -> object:
    if action == DOMAINS_ACTION:
        return client.list_domains("p", deadline=deadline(), limit=10)
    if action == QUOTA_ACTION:
        return client.domain_quota("p", "ucdn-1", deadline=deadline())
    if action == PREFETCH_ENABLE_ACTION:
        return client.prefetch_enabled("p", "ucdn-1", deadline=deadline())
    if action == PROJECTS_ACTION:
        return client.list_projects(deadline=deadline())
    return client.fetch_tasks(
        "p", is_dcdn=False, begin=0, end=1, deadline=deadline(), action=action
    )


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(
    ("code", "reason", "attempts"),
    [(153, "rate_limited", 2), (110, "api_error", 2), (171, "api_error", 1), (299, "api_error", 1)],
)
def test_ret_codes_become_outcomes_counted_under_their_action(
    family: Callable[..., tuple[Gateway, ApiClient]],
    action: str,
    code: int,
    reason: str,
    attempts: int,
) -> None:
    answer = {"RetCode": code, "Message": "no"}
    gateway, client = family(lambda form: answer, max_retries=1)
    with pytest.raises(ApiError) as raised:
        call(client, action)
    assert (raised.value.reason, raised.value.request_id) == (reason, REQUEST_ID)
    assert raised.value.detail == f"RetCode {code}: no"
    assert gateway.actions() == [action] * attempts  # 153 and 110 are tried again, once here
    counted = {key: count for key, count in client.stats.snapshot().items() if count}
    assert counted == {(action, reason): attempts}


def test_every_action_and_outcome_is_in_the_snapshot(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    _, client = family(domain_pages(domains(2)))
    client.list_domains("p", deadline=deadline(), limit=10)
    snapshot = client.stats.snapshot()
    assert list(snapshot) == [(action, outcome) for action in ACTIONS for outcome in OUTCOMES]
    assert {key: count for key, count in snapshot.items() if count} == {(DOMAINS_ACTION, "ok"): 1}


@pytest.mark.parametrize("action", [DOMAINS_ACTION, QUOTA_ACTION, PREFETCH_ENABLE_ACTION])
def test_the_private_key_and_signature_never_reach_an_error(
    family: Callable[..., tuple[Gateway, ApiClient]], action: str
) -> None:
    def echo(form: dict[str, str]) -> dict[str, Any]:
        message = f"bad key {PRIVATE.upper()} for {form['Signature'].upper()}"
        return {"RetCode": 292, "Message": message}

    _, client = family(echo)
    with pytest.raises(ApiError) as raised:
        call(client, action)
    text = str(raised.value).lower()
    assert PRIVATE.lower() not in text
    assert "<redacted>" in text
    assert all(len(word) < 40 for word in text.split())  # no signature, in any case


def test_a_slow_domain_call_ends_at_its_deadline(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    _, client = family(lambda form: {"RetCode": 0, "Enable": 1}, delay=3.0)
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        client.prefetch_enabled("p", "ucdn-1", deadline=Deadline.after(0.5))
    assert raised.value.reason == "timeout"
    assert time.monotonic() - started < 1.5
    assert client.stats.snapshot()[PREFETCH_ENABLE_ACTION, "timeout"] == 1


def test_the_domain_list_shares_one_byte_budget(
    family: Callable[..., tuple[Gateway, ApiClient]],
) -> None:
    # Every page fits the answer cap; together they pass the collection's budget.
    _, client = family(domain_pages(domains(60)), page_size=10, max_collection_bytes=2000)
    with pytest.raises(ApiError) as raised:
        client.list_domains("p", deadline=deadline(), limit=1000)
    assert raised.value.reason == "invalid_response"
    assert "max_collection_bytes" in raised.value.detail
