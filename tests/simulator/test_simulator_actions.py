"""The simulator's other four actions: refresh tasks, domains, quotas and the prefetch switch.

Real servers on loopback, real HTTP, signed requests; the answers are decoded with the
exporter's own answer shapes, so a field the exporter cannot read fails here.
"""

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import requests
from simdata import domains, failure_ratio_by_domain, refresh_task, url_domain, url_progress
from simfaults import SimulatedApi

from exporter.gateway.answers import (
    DOMAINS_ACTION,
    PREFETCH_ACTION,
    PREFETCH_ENABLE_ACTION,
    QUOTA_ACTION,
    REFRESH_ACTION,
    DomainListResponse,
    PrefetchEnableResponse,
    QuotaResponse,
    TaskListResponse,
)
from exporter.gateway.signature import ParamValue, signed_form
from exporter.simulator.live import LiveDataset
from exporter.simulator.livedomains import FAILING_DOMAIN, NEAR_QUOTA_DOMAIN, PREFETCH_OFF_DOMAIN
from exporter.simulator.protocol import (
    DAY_SECONDS,
    DEMO_PRIVATE_KEY,
    DEMO_PUBLIC_KEY,
    REQUEST_ID_HEADER,
    Quota,
    Target,
    Task,
)
from exporter.simulator.static import StaticDataset

NOW = 1_700_000_000
DEFAULT: Target = ("", False)
TIMEOUT = (2, 5)
SHOP_DOMAINS = domains("shop", *(f"d{index}.shop.example" for index in range(1, 8)))
DEFAULT_DOMAINS = domains("", "cdn.example.com", "Static.Example.com")
BUSY = Quota(submit_prefetch_count=450, submit_refresh_file=12, submit_refresh_dir=3)


def refreshes() -> list[Task]:
    statuses = ["success", "failure", "process", "wait"]
    return [
        refresh_task(
            f"rf{index:02d}",
            NOW - 120 * index,
            [url_progress(f"https://cdn.example.com/p{index}", statuses[index % 4], NOW)],
            kind="dir" if index % 3 == 0 else "file",
        )
        for index in range(12)
    ]


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    dataset = StaticDataset(
        {DEFAULT: [{"TaskId": "pf1", "CreateTime": NOW - 5, "Status": "wait", "UrlLists": []}]},
        refresh_tasks={DEFAULT: refreshes()},
        domains={"shop": SHOP_DOMAINS, "": DEFAULT_DOMAINS},
        quotas={("shop", SHOP_DOMAINS[0].domain_id): BUSY},
        prefetch_enabled={("shop", SHOP_DOMAINS[1].domain_id): False},
    )
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, clock=lambda: NOW) as server:
        yield server


def post(api: SimulatedApi, action: str, **params: ParamValue) -> requests.Response:
    form = signed_form({"Action": action, **params}, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
    response = requests.post(api.url, data=form, timeout=TIMEOUT)
    assert response.status_code == 200
    return response


def call(api: SimulatedApi, action: str, **params: ParamValue) -> dict[str, Any]:
    answer = dict(post(api, action, **params).json())
    assert answer["Action"] == action + "Response"
    return answer


# --- refresh tasks


def test_refresh_tasks_page_like_prefetch_tasks_and_carry_their_type(api: SimulatedApi) -> None:
    pages = [call(api, REFRESH_ACTION, Offset=offset, Limit=5) for offset in (0, 5, 10)]
    assert {page["TotalCount"] for page in pages} == {12}
    listed = [task for page in pages for task in page["TaskList"]]
    assert [task["TaskId"] for task in listed] == [f"rf{index:02d}" for index in range(12)]
    assert [task["Type"] for task in listed] == [
        "dir" if index % 3 == 0 else "file" for index in range(12)
    ]
    decoded = msgspec.json.decode(post(api, REFRESH_ACTION).content, type=TaskListResponse)
    assert {task.type for task in decoded.task_list} == {"file", "dir"}


def test_refresh_filters_and_prefetch_stay_apart(api: SimulatedApi) -> None:
    failed = call(api, REFRESH_ACTION, Status="failure")
    assert [task["TaskId"] for task in failed["TaskList"]] == ["rf01", "rf05", "rf09"]
    chosen = call(api, REFRESH_ACTION, **{"TaskId.0": "rf03", "TaskId.1": "pf1"})
    assert [task["TaskId"] for task in chosen["TaskList"]] == ["rf03"]
    prefetch = call(api, PREFETCH_ACTION)
    assert [task["TaskId"] for task in prefetch["TaskList"]] == ["pf1"]
    assert "Type" not in prefetch["TaskList"][0]


# --- domains


# One project's domains: the account's are below, in "the account's projects".
SHOP: dict[str, ParamValue] = {"ProjectId": "shop", "QueryByProject": True}


def test_the_domain_list_pages_by_page_size_and_index(api: SimulatedApi) -> None:
    pages = [call(api, DOMAINS_ACTION, **SHOP, PageSize=3, PageIndex=index) for index in (1, 2, 3)]
    assert {page["TotalCount"] for page in pages} == {7}
    assert [len(page["DomainInfoList"]) for page in pages] == [3, 3, 1]
    listed = [entry for page in pages for entry in page["DomainInfoList"]]
    assert listed == [{"Domain": d.name, "DomainId": d.domain_id} for d in SHOP_DOMAINS]
    past_the_end = call(api, DOMAINS_ACTION, **SHOP, PageSize=3, PageIndex=4)
    assert past_the_end["DomainInfoList"] == [] and past_the_end["TotalCount"] == 7


def test_page_index_zero_lists_every_domain_and_page_size_defaults_to_20(
    api: SimulatedApi,
) -> None:
    every = call(api, DOMAINS_ACTION, **SHOP, PageSize=2, PageIndex=0)
    assert len(every["DomainInfoList"]) == 7
    assert call(api, DOMAINS_ACTION, **SHOP)["DomainInfoList"] == every["DomainInfoList"]
    body = post(api, DOMAINS_ACTION, QueryByProject=True).content  # the default project
    decoded = msgspec.json.decode(body, type=DomainListResponse)
    assert [(d.domain, d.domain_id) for d in decoded.domain_info_list] == [
        (d.name, d.domain_id) for d in DEFAULT_DOMAINS
    ]
    nobody: dict[str, ParamValue] = {"ProjectId": "nobody", "QueryByProject": True}
    assert call(api, DOMAINS_ACTION, **nobody)["DomainInfoList"] == []


@pytest.mark.parametrize(
    "change",
    [{"PageSize": "0"}, {"PageSize": "x"}, {"PageIndex": "-1"}, {"QueryByProject": "yes"}],
)
def test_bad_domain_paging_is_a_parameter_error(api: SimulatedApi, change: dict[str, str]) -> None:
    answer = call(api, DOMAINS_ACTION, **{**SHOP, **change})
    assert answer["RetCode"] == 230 and "DomainInfoList" not in answer


# --- quotas and the prefetch switch


def test_quotas_are_served_as_given_and_default_to_the_documented_limits(
    api: SimulatedApi,
) -> None:
    busy = post(api, QUOTA_ACTION, ProjectId="shop", DomainId=SHOP_DOMAINS[0].domain_id)
    decoded = msgspec.json.decode(busy.content, type=QuotaResponse)
    assert (decoded.ret_code, decoded.prefetch_quota) == (0, 500)
    assert decoded.submit_prefetch_count == 450
    assert (decoded.submit_refresh_file, decoded.submit_refresh_dir) == (12, 3)
    fresh = call(api, QUOTA_ACTION, ProjectId="shop", DomainId=SHOP_DOMAINS[2].domain_id)
    assert {name: value for name, value in fresh.items() if name not in ("Action", "RetCode")} == {
        "PrefetchQuota": 500,
        "SubmitPrefetchCount": 0,
        "RefreshFileQuota": 700,
        "SubmitRefreshFile": 0,
        "RefreshDirQuota": 20,
        "SubmitRefreshDir": 0,
    }


def test_the_prefetch_switch_is_on_unless_switched_off(api: SimulatedApi) -> None:
    def enable(domain_id: str) -> int:
        body = post(api, PREFETCH_ENABLE_ACTION, ProjectId="shop", DomainId=domain_id).content
        return msgspec.json.decode(body, type=PrefetchEnableResponse).enable

    assert [enable(domain.domain_id) for domain in SHOP_DOMAINS[:3]] == [1, 0, 1]


@pytest.mark.parametrize("action", [QUOTA_ACTION, PREFETCH_ENABLE_ACTION])
@pytest.mark.parametrize(
    "params",
    [
        {"ProjectId": "shop"},
        {"ProjectId": "shop", "DomainId": ""},
        {"ProjectId": "shop", "DomainId": "ucdn-nope"},
        {"ProjectId": "", "DomainId": SHOP_DOMAINS[0].domain_id},  # another project's domain
    ],
    ids=["missing", "empty", "unknown", "other-project"],
)
def test_a_missing_or_unknown_domain_id_is_a_parameter_error(
    api: SimulatedApi, action: str, params: dict[str, str]
) -> None:
    answer = call(api, action, **params)
    assert answer["RetCode"] == 230
    assert "DomainId" in answer["Message"]
    assert set(answer) == {"Action", "RetCode", "Message"}


# --- the gateway's conventions, for every action


@pytest.mark.parametrize(
    "action", [REFRESH_ACTION, DOMAINS_ACTION, QUOTA_ACTION, PREFETCH_ENABLE_ACTION]
)
def test_every_action_checks_the_signature_and_sends_a_request_id(
    api: SimulatedApi, action: str
) -> None:
    form = signed_form(
        {"Action": action, "ProjectId": "shop", "DomainId": SHOP_DOMAINS[0].domain_id},
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
    )
    good = requests.post(api.url, data=form, timeout=TIMEOUT)
    assert good.json()["RetCode"] == 0 and good.headers[REQUEST_ID_HEADER]
    tampered = requests.post(api.url, data={**form, "ProjectId": "other"}, timeout=TIMEOUT)
    assert tampered.json() == {
        "Action": action + "Response",
        "RetCode": 171,
        "Message": "Signature VerifyAC Error",
    }
    assert tampered.headers[REQUEST_ID_HEADER] != good.headers[REQUEST_ID_HEADER]


def test_requests_are_counted_per_action(api: SimulatedApi) -> None:
    post(api, DOMAINS_ACTION, ProjectId="shop", PageSize=3, PageIndex=1)
    post(api, DOMAINS_ACTION, ProjectId="shop", PageSize=3, PageIndex=2)
    post(api, QUOTA_ACTION, ProjectId="shop", DomainId=SHOP_DOMAINS[0].domain_id)
    post(api, REFRESH_ACTION)
    post(api, "NoSuchAction")
    assert api.requests_by_action() == {
        DOMAINS_ACTION: 2,
        QUOTA_ACTION: 1,
        REFRESH_ACTION: 1,
        "NoSuchAction": 1,
    }
    assert api.request_count(action=DOMAINS_ACTION) == 2
    assert api.request_count("shop", action=QUOTA_ACTION) == 1
    assert api.request_count(action=PREFETCH_ACTION) == 0
    api.reset_log()
    assert api.requests_by_action() == {}


# --- the demo's world


def live_day(dataset: LiveDataset, kind: str = "prefetch", now: int = NOW) -> list[Task]:
    listed = dataset.tasks if kind == "prefetch" else dataset.refresh_tasks
    return [
        *listed(DEFAULT, now - DAY_SECONDS, now),
        *listed(("", True), now - DAY_SECONDS, now),
    ]


def test_the_live_world_is_a_function_of_its_seed() -> None:
    first, again, other = (LiveDataset(seed, clock=lambda: NOW) for seed in (4, 4, 5))
    assert first.domains("shop") == again.domains("shop")
    assert first.domains("shop") != other.domains("shop")
    assert first.domains("shop") != first.domains("")
    assert live_day(first, "refresh") == live_day(again, "refresh")
    assert live_day(first, "refresh") != live_day(other, "refresh")
    assert [first.quota("shop", d.domain_id) for d in first.domains("shop")] == [
        again.quota("shop", d.domain_id) for d in again.domains("shop")
    ]


def test_the_live_world_has_the_demos_special_domains() -> None:
    dataset = LiveDataset(0, clock=lambda: NOW)
    listed = {domain.name: domain.domain_id for domain in dataset.domains("")}
    assert len(listed) >= 4
    assert {NEAR_QUOTA_DOMAIN, PREFETCH_OFF_DOMAIN, FAILING_DOMAIN} <= set(listed)
    enabled = {name: dataset.prefetch_enabled("", domain_id) for name, domain_id in listed.items()}
    assert [name for name, on in enabled.items() if not on] == [PREFETCH_OFF_DOMAIN]
    tasks = live_day(dataset)
    urls = [url["Url"] for task in tasks for url in task["UrlLists"]]
    assert {url_domain(url) for url in urls} == set(listed)
    assert any(url_domain(url) == PREFETCH_OFF_DOMAIN for url in urls)
    hosts = {url.split("/")[2] for url in urls}
    assert any(host != host.lower() for host in hosts)  # capitals...
    assert any(":" in host for host in hosts)  # ...and ports, for the exporter to undo
    ratios = failure_ratio_by_domain(tasks)
    others = max(ratio for name, ratio in ratios.items() if name != FAILING_DOMAIN)
    assert ratios[FAILING_DOMAIN] > 3 * others


def _fixed(moment: int) -> Callable[[], float]:
    """A clock stopped at ``moment``."""
    return lambda: moment


def test_live_quotas_fill_during_the_day_and_one_domain_is_near_its_prefetch_quota() -> None:
    midnight = NOW - NOW % DAY_SECONDS
    moments = [midnight + hour * 3600 for hour in range(0, 24, 3)] + [midnight + DAY_SECONDS - 1]
    for domain in LiveDataset(0).domains(""):
        quotas = [LiveDataset(0, clock=_fixed(m)).quota("", domain.domain_id) for m in moments]
        assert all(quota is not None for quota in quotas)
        used = [quota.submit_prefetch_count for quota in quotas if quota is not None]
        assert used == sorted(used) and used[-1] > used[0], domain.name
        for quota in quotas:
            assert quota is not None
            assert 0 <= quota.submit_refresh_file <= quota.refresh_file_quota == 700
            assert 0 <= quota.submit_refresh_dir <= quota.refresh_dir_quota == 20
            assert quota.submit_prefetch_count <= quota.prefetch_quota == 500
            if domain.name == NEAR_QUOTA_DOMAIN:
                assert quota.submit_prefetch_count > 0.8 * quota.prefetch_quota
            else:
                assert quota.submit_prefetch_count < 0.8 * quota.prefetch_quota


def test_live_refreshes_finish_in_minutes_and_one_is_always_overdue() -> None:
    for now in range(NOW, NOW + 6 * 3600, 1800):
        tasks = live_day(LiveDataset(2, clock=_fixed(now)), "refresh", now)
        assert {task["Type"] for task in tasks} == {"file", "dir"}
        overdue = [
            task
            for task in tasks
            if task["Status"] in ("wait", "process") and now - task["CreateTime"] > 600
        ]
        assert overdue, now
    finished = [task for task in tasks if task["Status"] in ("success", "failure")]
    durations = [
        url["FinishTime"] - task["CreateTime"] for task in finished for url in task["UrlLists"]
    ]
    assert sorted(durations)[len(durations) // 2] < 120  # most take effect in about a minute
    # Only the rare hanging one takes longer: it finishes after hours, not minutes.
    assert sum(duration < 600 for duration in durations) > 0.95 * len(durations)
    assert 0 < sum(task["Status"] == "failure" for task in finished) < 0.1 * len(finished)


def test_a_live_scrape_of_the_domain_actions_over_http() -> None:
    dataset = LiveDataset(0, clock=lambda: NOW)
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, clock=lambda: NOW) as api:
        listed = call(api, DOMAINS_ACTION, PageSize=2, PageIndex=1)
        assert listed["TotalCount"] == 5 and len(listed["DomainInfoList"]) == 2
        first = listed["DomainInfoList"][0]["DomainId"]
        quota = call(api, QUOTA_ACTION, DomainId=first)
        assert quota["RetCode"] == 0 and quota["PrefetchQuota"] == 500
        assert call(api, PREFETCH_ENABLE_ACTION, DomainId=first)["Enable"] in (0, 1)
        refreshed = call(api, REFRESH_ACTION, Limit=3)
        assert len(refreshed["TaskList"]) == 3
        assert all(task["Type"] in ("file", "dir") for task in refreshed["TaskList"])
        assert dict(api.requests_by_action()) == dict.fromkeys(
            [DOMAINS_ACTION, QUOTA_ACTION, PREFETCH_ENABLE_ACTION, REFRESH_ACTION], 1
        )


def test_static_worlds_without_the_new_parts_answer_empty() -> None:
    dataset = StaticDataset({DEFAULT: []})
    assert dataset.refresh_tasks(DEFAULT, 0, NOW) == []
    assert dataset.domains("") == []
    assert dataset.quota("", "ucdn-x") is None
    assert dataset.prefetch_enabled("", "ucdn-x") is None
