"""Reading a request: its parameters off the wire, then validated into a query of one action."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl

from exporter.gateway.signature import wire_value
from exporter.simulator.protocol import DAY_SECONDS, PROJECT_LIST_ACTION, Target, Task

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 20  # the domain list's documented default


class ParamError(ValueError):
    """A request parameter the gateway would reject; the message names it."""


def _optional_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ParamError(f"Params [{name}] not available") from None


def _flag(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "false")
    if raw not in ("true", "false"):
        raise ParamError(f"Params [{name}] not available")
    return raw == "true"


def _is_dcdn(params: Mapping[str, str]) -> bool:
    return _flag(params, "IsDcdn")


def offset_of(params: Mapping[str, str]) -> int:
    """The request's Offset for choosing faults; 0 when absent or not a number."""
    try:
        return int(params.get("Offset", "0"))
    except ValueError:
        return 0


def target_of(params: Mapping[str, str]) -> Target | None:
    """Return the request's target; None for the project list, which names none, or when
    IsDcdn is not ``true``/``false``."""
    if params.get("Action") == PROJECT_LIST_ACTION:
        return None
    try:
        return params.get("ProjectId", ""), _is_dcdn(params)
    except ParamError:
        return None


@dataclass(frozen=True)
class Query:
    """A validated request: which tasks, which page."""

    target: Target
    begin: int
    end: int
    status: str | None
    task_ids: frozenset[str] | None
    offset: int
    limit: int | None

    @classmethod
    def parse(cls, params: Mapping[str, str], now: int) -> "Query":
        begin = _optional_int(params, "BeginTime")
        end = _optional_int(params, "EndTime")
        if end is not None and begin is None:
            raise ParamError("Params [BeginTime] required when EndTime is set")
        end = now if end is None else end
        offset = _optional_int(params, "Offset") or 0
        limit = _optional_int(params, "Limit")
        if offset < 0 or (limit is not None and limit < 0):
            raise ParamError("Params [Offset] or [Limit] not available")
        task_ids = frozenset(value for name, value in params.items() if _is_task_id_param(name))
        return cls(
            target=(params.get("ProjectId", ""), _is_dcdn(params)),
            begin=end - DAY_SECONDS if begin is None else begin,
            end=end,
            status=params.get("Status") or None,
            task_ids=task_ids or None,
            offset=offset,
            limit=limit,
        )

    def matches(self, task: Task) -> bool:
        if self.status is not None and task.get("Status") != self.status:
            return False
        return self.task_ids is None or task.get("TaskId") in self.task_ids

    def page(self, tasks: Sequence[Task]) -> Sequence[Task]:
        stop = None if self.limit is None else self.offset + self.limit
        return tasks[self.offset : stop]


@dataclass(frozen=True)
class DomainPage:
    """A validated ``GetUcdnDomainInfoList`` request: which project, which page.

    ``query_by_project`` is ``QueryByProject=true``: only the project's domains, where the
    API's default is the whole account's.
    """

    project_id: str
    page_size: int
    page_index: int  # from 1; 0 means every domain at once
    query_by_project: bool

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> "DomainPage":
        page_size = _optional_int(params, "PageSize")
        page_index = _optional_int(params, "PageIndex")
        if page_size is not None and page_size < 1:
            raise ParamError("Params [PageSize] not available")
        if page_index is not None and page_index < 0:
            raise ParamError("Params [PageIndex] not available")
        return cls(
            project_id=params.get("ProjectId", ""),
            page_size=DEFAULT_PAGE_SIZE if page_size is None else page_size,
            page_index=1 if page_index is None else page_index,
            query_by_project=_flag(params, "QueryByProject"),
        )

    def page(self, items: Sequence[T]) -> Sequence[T]:
        if self.page_index == 0:
            return items
        start = (self.page_index - 1) * self.page_size
        return items[start : start + self.page_size]


def domain_id_of(params: Mapping[str, str]) -> str:
    """The request's DomainId, which the quota and switch actions require."""
    domain_id = params.get("DomainId")
    if not domain_id:
        raise ParamError("Params [DomainId] required")
    return domain_id


def _is_task_id_param(name: str) -> bool:
    prefix, _, index = name.partition(".")
    return prefix == "TaskId" and index.isdigit()


def json_params(body: bytes) -> dict[str, str]:
    try:
        decoded = json.loads(body)
    except ValueError:
        raise ParamError("request body is not valid JSON") from None
    if not isinstance(decoded, dict):
        raise ParamError("request body is not a JSON object")
    params = {}
    for name, value in decoded.items():
        if not isinstance(value, str | int | float):
            raise ParamError(f"Params [{name}] not available")
        params[name] = wire_value(value)
    return params


def form_params(text: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(text.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise ParamError("request is not UTF-8") from None
