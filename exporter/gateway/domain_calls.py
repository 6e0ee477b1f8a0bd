"""The domain calls: a project's domains, page by page, and each domain's quota and switch.

``GetUcdnDomainInfoList`` pages by ``PageIndex`` (from 1; 0 would mean "all at once",
which nothing bounds) and ``PageSize``. Its ``TotalCount`` is a hint, as the task
list's is: paging goes on while pages come back full, ends at the first short or empty
page or once ``limit`` domains are kept, and never asks for more than ``max_pages``.
Without ``QueryByProject=true`` the API lists the whole account's domains whatever the
ProjectId, so every list sends it: a project's quotas are its own domains' alone.
"""

from dataclasses import dataclass
from typing import Final

from exporter.gateway.answers import (
    DOMAINS_ACTION,
    PREFETCH_ENABLE_ACTION,
    QUOTA_ACTION,
    DomainInfo,
    DomainListResponse,
    PrefetchEnableResponse,
    QuotaResponse,
)
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.signature import ParamValue
from exporter.gateway.transport import ClientOptions, Transport

# The API's own default is 20 and its largest page is not documented: a page of 100 short
# records is well within any gateway's answer size, and asks no more than the task list.
_MAX_DOMAIN_PAGE_SIZE: Final = 100


@dataclass(frozen=True)
class DomainList:
    """At most ``limit`` of a project's domains, each once, and how many the API has.

    ``total`` is the larger of the API's last TotalCount and the distinct domains seen
    (those listed without a DomainId included), so that ``total - len(domains)`` is how
    many were left out: beyond the limit, or without a DomainId to ask about.
    """

    domains: list[DomainInfo]
    total: int


def list_domains(
    transport: Transport,
    options: ClientOptions,
    project_id: str,
    *,
    deadline: Deadline,
    limit: int,
) -> DomainList:
    """Every page of the project's domains up to ``limit`` kept, each DomainId once.

    A domain listed without a DomainId is not kept, as nothing can be asked about it: it
    is counted among those left out, an anomaly of the API's that costs no other domain.
    Raises ValueError for a negative ``limit``, :class:`ApiError` for a failed page or,
    as ``invalid_response``, when ``max_pages`` full pages do not reach the end.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    page_size = min(options.page_size, _MAX_DOMAIN_PAGE_SIZE)
    kept: list[DomainInfo] = []
    seen: set[str] = set()
    without_id = 0
    total_count = 0
    for index in range(1, options.max_pages + 1):
        query = _domain_query(
            DOMAINS_ACTION, project_id, QueryByProject=True, PageSize=page_size, PageIndex=index
        )
        answer = transport.call(query, deadline, DomainListResponse)
        total_count = answer.total_count or 0
        for domain in answer.domain_info_list:
            if not domain.domain_id:
                without_id += 1
                continue
            if domain.domain_id in seen:
                continue
            seen.add(domain.domain_id)
            if len(kept) < limit:
                kept.append(domain)
        if len(answer.domain_info_list) < page_size or len(kept) >= limit:
            return DomainList(kept, max(total_count, len(seen) + without_id))
    raise ApiError("invalid_response", f"more than {options.max_pages} pages of domains")


def domain_quota(
    transport: Transport, project_id: str, domain_id: str, *, deadline: Deadline
) -> QuotaResponse:
    """One domain's daily quotas and today's submissions; ValueError without a domain_id."""
    query = _domain_query(QUOTA_ACTION, project_id, DomainId=_required(domain_id))
    return transport.call(query, deadline, QuotaResponse)


def prefetch_enabled(
    transport: Transport, project_id: str, domain_id: str, *, deadline: Deadline
) -> bool:
    """Whether prefetch is on for the domain; an ``Enable`` other than 0 or 1 is invalid."""
    query = _domain_query(PREFETCH_ENABLE_ACTION, project_id, DomainId=_required(domain_id))
    answer = transport.call(query, deadline, PrefetchEnableResponse)
    if answer.enable not in (0, 1):
        raise ApiError("invalid_response", f"Enable is {answer.enable}, not 0 or 1")
    return answer.enable == 1


def _required(domain_id: str) -> str:
    if not domain_id:
        raise ValueError("domain_id is required")
    return domain_id


def _domain_query(action: str, project_id: str, **params: ParamValue) -> dict[str, ParamValue]:
    query: dict[str, ParamValue] = {"Action": action, **params}
    if project_id:  # an empty ProjectId means the default project: leave it out
        query["ProjectId"] = project_id
    return query
