"""The simulated account: its projects, GetProjectList, projects added and removed while it
runs, the account-wide domain list, and the rate limit.

Real servers on loopback, real HTTP, signed requests.
"""

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simdata import domains
from simfaults import SimulatedApi

from exporter.gateway.answers import DOMAINS_ACTION, PREFETCH_ACTION, QUOTA_ACTION, REFRESH_ACTION
from exporter.gateway.signature import ParamValue, signed_form
from exporter.simulator.account import (
    DEFAULT_PROJECT_ID,
    PROJECT_EPOCH,
    Account,
    Project,
    numbered_projects,
)
from exporter.simulator.protocol import (
    DEMO_PRIVATE_KEY,
    DEMO_PUBLIC_KEY,
    PROJECT_LIST_ACTION,
    Task,
)
from exporter.simulator.static import StaticDataset

NOW = 1_700_000_000
TIMEOUT = (2, 5)
ALPHA = domains("org-alpha", "a1.example.com", "a2.example.com")
BETA = domains("org-beta", "b1.example.com", "b2.example.com", "b3.example.com")
PROJECTS = [
    Project("org-alpha", "Alpha", is_default=True, create_time=NOW - 900, member_count=3),
    Project("org-beta", "Beta <&>", create_time=NOW - 100, member_count=1),
]


def task(task_id: str) -> Task:
    return {"TaskId": task_id, "CreateTime": NOW - 60, "Status": "wait", "UrlLists": []}


def dataset() -> StaticDataset:
    return StaticDataset(
        {
            ("org-alpha", False): [task("alpha-1")],
            ("org-beta", False): [task("beta-1"), task("beta-2")],
            ("org-beta", True): [task("beta-dcdn")],
        },
        refresh_tasks={("org-beta", False): [{**task("beta-rf"), "Type": "dir"}]},
        domains={"org-alpha": ALPHA, "org-beta": BETA},
    )


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset(), clock=lambda: NOW, projects=PROJECTS
    ) as server:
        yield server


def call(api: SimulatedApi, action: str, **params: ParamValue) -> dict[str, Any]:
    form = signed_form({"Action": action, **params}, DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY)
    answer: dict[str, Any] = requests.post(api.url, data=form, timeout=TIMEOUT).json()
    assert answer["Action"] == action + "Response"
    return answer


def task_ids(api: SimulatedApi, action: str = PREFETCH_ACTION, **params: ParamValue) -> list[str]:
    answer = call(api, action, **params)
    assert answer["RetCode"] == 0, answer
    return [listed["TaskId"] for listed in answer["TaskList"]]


def listed_domains(api: SimulatedApi, **params: ParamValue) -> tuple[int, list[str]]:
    answer = call(api, DOMAINS_ACTION, PageIndex=0, **params)
    assert answer["RetCode"] == 0, answer
    return answer["TotalCount"], [entry["Domain"] for entry in answer["DomainInfoList"]]


# --- GetProjectList


def test_the_project_list_lists_every_project_as_the_api_documents(api: SimulatedApi) -> None:
    answer = call(api, PROJECT_LIST_ACTION)
    assert answer == {
        "Action": "GetProjectListResponse",
        "RetCode": 0,
        "ProjectCount": 2,
        "ProjectSet": [
            {
                "ProjectId": "org-alpha",
                "ProjectName": "Alpha",
                "IsDefault": True,
                "CreateTime": NOW - 900,
                "MemberCount": 3,
            },
            {
                "ProjectId": "org-beta",
                "ProjectName": "Beta <&>",
                "IsDefault": False,
                "CreateTime": NOW - 100,
                "MemberCount": 1,
            },
        ],
    }


def test_the_project_list_names_no_target(api: SimulatedApi) -> None:
    call(api, PROJECT_LIST_ACTION)
    call(api, PREFETCH_ACTION)
    assert [record.target for record in api.requests] == [None, ("", False)]
    assert api.request_count(action=PROJECT_LIST_ACTION) == 1
    assert api.request_count(project_id="") == 1


def test_the_project_list_is_signed_like_every_action(api: SimulatedApi) -> None:
    form = signed_form({"Action": PROJECT_LIST_ACTION}, DEMO_PUBLIC_KEY, "not-the-key")
    answer = requests.post(api.url, data=form, timeout=TIMEOUT).json()
    assert answer["RetCode"] == 171 and "ProjectSet" not in answer


def test_the_switch_makes_iam_refuse_the_project_list_and_nothing_else(api: SimulatedApi) -> None:
    api.refuse_project_list = True
    assert api.refuse_project_list
    refused = call(api, PROJECT_LIST_ACTION)
    assert refused["RetCode"] == 299 and "ProjectSet" not in refused
    assert task_ids(api, ProjectId="org-alpha") == ["alpha-1"]
    api.refuse_project_list = False
    assert call(api, PROJECT_LIST_ACTION)["ProjectCount"] == 2


def test_an_open_account_lists_its_default_project_and_serves_any_other() -> None:
    open_world = StaticDataset({("", False): [task("d-1")], ("shop", False): [task("s-1")]})
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, open_world, clock=lambda: NOW) as api:
        listed = call(api, PROJECT_LIST_ACTION)
        assert [project["ProjectId"] for project in listed["ProjectSet"]] == [DEFAULT_PROJECT_ID]
        assert listed["ProjectSet"][0]["IsDefault"] is True
        # The default project by its ID is the empty ProjectId's, as the API documents.
        assert task_ids(api, ProjectId=DEFAULT_PROJECT_ID) == task_ids(api) == ["d-1"]
        assert task_ids(api, ProjectId="shop") == ["s-1"]
        assert task_ids(api, ProjectId="anything") == []
        api.add_project("shop", "Shop")
        listed = call(api, PROJECT_LIST_ACTION)
        assert listed["ProjectSet"][1] == {
            "ProjectId": "shop",
            "ProjectName": "Shop",
            "IsDefault": False,
            "CreateTime": NOW,
            "MemberCount": 1,
        }
        api.remove_project("shop")
        assert call(api, PREFETCH_ACTION, ProjectId="shop")["RetCode"] == 292
        assert task_ids(api, ProjectId="anything") == []  # still open to the others


# --- projects and their tasks


def test_each_project_has_its_own_tasks_and_the_empty_id_is_the_default(api: SimulatedApi) -> None:
    assert task_ids(api, ProjectId="org-alpha") == ["alpha-1"]
    assert task_ids(api) == ["alpha-1"]
    assert task_ids(api, ProjectId="org-beta") == ["beta-1", "beta-2"]
    assert task_ids(api, ProjectId="org-beta", IsDcdn=True) == ["beta-dcdn"]
    assert task_ids(api, REFRESH_ACTION, ProjectId="org-beta") == ["beta-rf"]
    assert task_ids(api, REFRESH_ACTION, ProjectId="org-alpha") == []


@pytest.mark.parametrize("action", [PREFETCH_ACTION, REFRESH_ACTION, DOMAINS_ACTION, QUOTA_ACTION])
def test_a_project_the_account_lacks_is_retcode_292(api: SimulatedApi, action: str) -> None:
    answer = call(api, action, ProjectId="org-gamma", DomainId=ALPHA[0].domain_id)
    assert answer["RetCode"] == 292 and "org-gamma" in answer["Message"]


def test_projects_added_and_removed_while_it_runs(api: SimulatedApi) -> None:
    api.add_project("org-gamma", "Gamma")
    assert task_ids(api, ProjectId="org-gamma") == []  # a new project: nothing in it yet
    assert call(api, PROJECT_LIST_ACTION)["ProjectCount"] == 3
    api.remove_project("org-beta")
    listed = call(api, PROJECT_LIST_ACTION)
    assert [project["ProjectId"] for project in listed["ProjectSet"]] == ["org-alpha", "org-gamma"]
    for action in (PREFETCH_ACTION, REFRESH_ACTION):
        assert call(api, action, ProjectId="org-beta")["RetCode"] == 292
    assert listed_domains(api, ProjectId="org-alpha") == (2, ["a1.example.com", "a2.example.com"])
    api.add_project("org-beta")  # back again, with the tasks the dataset holds for it
    assert task_ids(api, ProjectId="org-beta") == ["beta-1", "beta-2"]


def test_the_account_refuses_impossible_changes(api: SimulatedApi) -> None:
    with pytest.raises(ValueError, match="default"):
        api.remove_project("org-alpha")
    with pytest.raises(KeyError):
        api.remove_project("org-nowhere")
    with pytest.raises(ValueError, match="already"):
        api.add_project("org-beta")
    with pytest.raises(ValueError, match="ID"):
        api.add_project("")
    with pytest.raises(ValueError, match="twice"):
        Account([Project("p"), Project("p")])
    with pytest.raises(ValueError, match="one default"):
        Account([Project("p", is_default=True), Project("q", is_default=True)])
    with pytest.raises(ValueError, match="at least"):
        Account([])
    assert Account([Project("p"), Project("q")]).projects()[0].is_default


def test_concurrent_changes_leave_a_consistent_account() -> None:
    account = Account([Project("org-main")])
    added = [f"org-{index:03d}" for index in range(200)]

    def churn(ids: list[str]) -> None:
        for project_id in ids:
            account.add(project_id)
            assert account.key_of(project_id) == project_id
        for project_id in ids[::2]:
            account.remove(project_id)

    threads = [threading.Thread(target=churn, args=(added[part::4],)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = {project.project_id for project in account.projects()}
    removed = {project_id for part in range(4) for project_id in added[part::4][::2]}
    assert kept == {"org-main", *added} - removed
    assert all(account.key_of(project_id) is None for project_id in removed)


def test_numbered_projects_make_a_large_account_alike_on_every_run() -> None:
    projects = numbered_projects(2000)
    assert len({project.project_id for project in projects}) == 2000
    assert projects[0] == Project("org-0001", "Project 0001", True, PROJECT_EPOCH + 3600, 2)
    assert projects[-1].project_id == "org-2000" and not projects[-1].is_default
    assert numbered_projects(12000)[-1].project_id == "org-12000"
    assert numbered_projects(3) == numbered_projects(3)
    with pytest.raises(ValueError):
        numbered_projects(0)


# --- the domain list: the account's, or the project's with QueryByProject


def test_without_query_by_project_the_domain_list_is_the_accounts(api: SimulatedApi) -> None:
    every = ["a1.example.com", "a2.example.com", "b1.example.com", "b2.example.com"]
    every.append("b3.example.com")
    for named in ("org-alpha", "org-beta", ""):
        assert listed_domains(api, ProjectId=named) == (5, every)
        assert listed_domains(api, ProjectId=named, QueryByProject=False) == (5, every)
    page = call(api, DOMAINS_ACTION, ProjectId="org-beta", PageSize=2, PageIndex=3)
    assert page["TotalCount"] == 5 and [d["Domain"] for d in page["DomainInfoList"]] == every[4:]


def test_with_query_by_project_the_domain_list_is_the_projects(api: SimulatedApi) -> None:
    alpha = listed_domains(api, ProjectId="org-alpha", QueryByProject=True)
    assert alpha == (2, ["a1.example.com", "a2.example.com"])
    assert listed_domains(api, QueryByProject=True) == alpha  # the default project
    beta = listed_domains(api, ProjectId="org-beta", QueryByProject=True)
    assert beta == (3, ["b1.example.com", "b2.example.com", "b3.example.com"])


def test_the_accounts_domains_follow_its_projects(api: SimulatedApi) -> None:
    api.remove_project("org-beta")
    assert listed_domains(api, ProjectId="org-alpha") == (2, ["a1.example.com", "a2.example.com"])
    api.add_project("org-beta")
    assert listed_domains(api, ProjectId="org-alpha")[0] == 5


def test_an_open_account_lists_the_domains_of_its_projects_and_of_the_one_asked_about() -> None:
    world = StaticDataset(
        {}, domains={"": domains("", "d.example.com"), "shop": domains("shop", "s.example.com")}
    )
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, world) as api:
        assert listed_domains(api) == (1, ["d.example.com"])
        assert listed_domains(api, ProjectId="shop") == (2, ["d.example.com", "s.example.com"])
        assert listed_domains(api, ProjectId="shop", QueryByProject=True) == (1, ["s.example.com"])


# --- the rate limit


def test_past_the_rate_limit_requests_are_refused_with_153_and_counted() -> None:
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset(), projects=PROJECTS, rate_limit=3
    ) as api:
        codes = [call(api, PREFETCH_ACTION)["RetCode"] for _ in range(5)]
        refused = call(api, PROJECT_LIST_ACTION)
        assert codes == [0, 0, 0, 153, 153] and refused["RetCode"] == 153
        assert refused["Message"]
        assert api.rate_limited == 3
        assert api.request_count() == 6  # refused requests are received, and recorded
        api.reset_log()
        assert api.rate_limited == 0


def test_the_rate_limit_is_per_second_sliding() -> None:
    api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset(), rate_limit=2)
    admitted = [api._admit(moment) for moment in (100.0, 100.5, 100.9, 101.0, 101.4, 101.5)]
    # 100.9 is the third within a second; at 101.0 the first has left the window, at 101.5
    # the second (of 100.5) has too.
    assert admitted == [True, True, False, True, False, True]
    assert api.rate_limited == 2


def test_a_rate_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset(), rate_limit=0)
