"""The API's semantics: what the gateway answers to one request's parameters.

Every action checks the action name and the signature first, as the gateway does; then
reads its parameters (RetCode 230 when one is wrong) and builds its answer from the
account and the dataset. ``GetProjectList`` lists the account's projects, unpaged. Every
other action names a project (none: the default one); a project the account does not have
is RetCode 292. The two task lists share parameters, filters and paging; the domain list
pages by PageSize and PageIndex and lists the whole account's domains unless
``QueryByProject=true``; the quota and switch actions need a DomainId the project has.
"""

import hmac
from collections.abc import Mapping
from typing import Any

from exporter.gateway.answers import (
    ACTIONS,
    DOMAINS_ACTION,
    PREFETCH_ENABLE_ACTION,
    QUOTA_ACTION,
    REFRESH_ACTION,
)
from exporter.gateway.signature import sign
from exporter.simulator.account import Account
from exporter.simulator.protocol import (
    PROJECT_LIST_ACTION,
    RET_ACTION_MISSING,
    RET_ACTION_NOT_EXIST,
    RET_PARAMS_INVALID,
    RET_PROJECT_NOT_EXIST,
    RET_SIGNATURE_ERROR,
    Dataset,
    error_payload,
)
from exporter.simulator.query import DomainPage, ParamError, Query, domain_id_of

# The exporter's actions and the project list, which its discovery calls.
SIMULATED_ACTIONS = frozenset((*ACTIONS, PROJECT_LIST_ACTION))


def auth_problem(
    params: Mapping[str, str], public_key: str, private_key: str
) -> dict[str, Any] | None:
    """The gateway's answer when the action or the signature is wrong, else None."""
    action = params.get("Action")
    if not action:
        return error_payload(RET_ACTION_MISSING, "Missing Action")
    if action not in SIMULATED_ACTIONS:
        return error_payload(RET_ACTION_NOT_EXIST, f"Action [{action}] not exist")
    signature = params.get("Signature")
    if not signature:
        return error_payload(RET_SIGNATURE_ERROR, "Missing signature", action)
    if params.get("PublicKey") != public_key:
        return error_payload(RET_SIGNATURE_ERROR, "PublicKey does not exist", action)
    if not hmac.compare_digest(signature, sign(params, private_key)):
        return error_payload(RET_SIGNATURE_ERROR, "Signature VerifyAC Error", action)
    return None


def answer(
    params: Mapping[str, str],
    dataset: Dataset,
    account: Account,
    *,
    now: int,
    total_count_error: int = 0,
) -> dict[str, Any]:
    """The answer to a signed request of a known action; ``total_count_error`` skews task lists."""
    action = params["Action"]
    if action == PROJECT_LIST_ACTION:
        listed = [project.as_answer() for project in account.projects()]
        return {
            "Action": action + "Response",
            "RetCode": 0,
            "ProjectCount": len(listed),
            "ProjectSet": listed,
        }
    named = params.get("ProjectId", "")
    key = account.key_of(named)
    if key is None:
        # 292 is the README's "project does not exist": what the gateway answers a call
        # naming a project the account does not have (or no longer has).
        return error_payload(RET_PROJECT_NOT_EXIST, f"Project [{named}] not exist", action)
    # From here on the project is the dataset's key of it, whatever the request called it.
    params = {**params, "ProjectId": key}
    try:
        if action == DOMAINS_ACTION:
            fields = _domain_list(params, dataset, account)
        elif action == QUOTA_ACTION:
            fields = _quota(params, dataset)
        elif action == PREFETCH_ENABLE_ACTION:
            fields = _prefetch_enable(params, dataset)
        else:
            fields = _task_list(params, dataset, now, total_count_error)
    except ParamError as error:
        return error_payload(RET_PARAMS_INVALID, str(error), action)
    return {"Action": action + "Response", "RetCode": 0, **fields}


def _task_list(
    params: Mapping[str, str], dataset: Dataset, now: int, total_count_error: int
) -> dict[str, Any]:
    query = Query.parse(params, now=now)
    listed = dataset.refresh_tasks if params["Action"] == REFRESH_ACTION else dataset.tasks
    matched = [task for task in listed(query.target, query.begin, query.end) if query.matches(task)]
    return {
        "TotalCount": len(matched) + total_count_error,
        "TaskList": list(query.page(matched)),
    }


def _domain_list(params: Mapping[str, str], dataset: Dataset, account: Account) -> dict[str, Any]:
    page = DomainPage.parse(params)
    if page.query_by_project:
        domains = list(dataset.domains(page.project_id))
    else:
        # As documented: without QueryByProject the list (and TotalCount) is the account's.
        keys = account.keys(page.project_id)
        domains = [domain for key in keys for domain in dataset.domains(key)]
    return {
        "TotalCount": len(domains),
        "DomainInfoList": [domain.as_answer() for domain in page.page(domains)],
    }


def _quota(params: Mapping[str, str], dataset: Dataset) -> dict[str, Any]:
    domain_id = domain_id_of(params)
    quota = dataset.quota(params.get("ProjectId", ""), domain_id)
    if quota is None:
        raise ParamError(f"Params [DomainId] {domain_id} not exist")
    return dict(quota.as_answer())


def _prefetch_enable(params: Mapping[str, str], dataset: Dataset) -> dict[str, Any]:
    domain_id = domain_id_of(params)
    enabled = dataset.prefetch_enabled(params.get("ProjectId", ""), domain_id)
    if enabled is None:
        raise ParamError(f"Params [DomainId] {domain_id} not exist")
    return {"Enable": int(enabled)}
