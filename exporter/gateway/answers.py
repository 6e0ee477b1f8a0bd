"""The shapes of the API's answer, decoded and validated by msgspec straight from the bytes.

msgspec checks every field's type and bound while it parses the JSON and builds only
the fields named here (unknown ones are skipped, not built), into slotted structs
outside the cycle collector's sight. On 100,000 URLs that costs about 0.3x plain
``json.loads``, where pydantic's ``TypeAdapter`` over TypedDicts costs about 1x
(``benchmarks/bench_scrape.py`` prints both).

Every field but ``RetCode`` is optional, as documented; a missing one takes the
default that the summaries would give it anyway (0 for a time, None for a status or
a TaskId, which are then counted as such). Lax mode accepts what a gateway may quote
or print as a float: ``"17"`` and ``17.0`` are the integer 17, and ``"RetCode": "0"``
is success.
"""

from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import msgspec

PREFETCH_ACTION: Final = "DescribeNewUcdnPrefetchCacheTask"
REFRESH_ACTION: Final = "DescribeNewUcdnRefreshCacheTask"
DOMAINS_ACTION: Final = "GetUcdnDomainInfoList"
QUOTA_ACTION: Final = "GetUcdnDomainPrefetchRefreshState"
PREFETCH_ENABLE_ACTION: Final = "GetUcdnDomainPrefetchEnable"
PROJECTS_ACTION: Final = "GetProjectList"
# Every action the exporter calls, in the order the request counter lists them.
ACTIONS: Final = (
    PREFETCH_ACTION,
    REFRESH_ACTION,
    DOMAINS_ACTION,
    QUOTA_ACTION,
    PREFETCH_ENABLE_ACTION,
    PROJECTS_ACTION,
)

STATUSES: Final = ("success", "wait", "process", "failure", "unknown")
FINISHED: Final = frozenset({"success", "failure"})
UNFINISHED: Final = frozenset({"wait", "process"})
# The gateway's integers are 64-bit. JSON allows any length, and an integer beyond a
# float's range would make every sum, division and exposition of it raise: such an
# answer is invalid, and checking it while parsing costs nothing next to the parsing.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# gc=False: these structs hold no container but a list of URL structs, so they can be
# in no reference cycle, and 100,000 of them need not be walked by the cycle collector.
class UrlProgress(msgspec.Struct, rename="pascal", gc=False):
    """One URL of a prefetch task (``UrlProgressInfo``)."""

    url: str = ""
    create_time: Int64 = 0
    finish_time: Int64 = 0
    status: str | None = None
    progress: Int64 = 0


class TaskInfo(msgspec.Struct, rename="pascal", gc=False):
    """One prefetch or refresh task (``TaskInfo``); only a refresh task has a ``Type``.

    ``key`` is not the gateway's: :func:`decode_tasks` sets it to the hash of the task's
    JSON as sent (0: not set), whatever an answer holds under the name it is read from,
    which no field of the API's resembles; typed ``Any`` so that no such value can make
    an answer invalid.
    """

    task_id: str | None = None
    create_time: Int64 = 0
    status: str | None = None
    type: str | None = None  # refresh only: "file" or "dir" (documented as deprecated)
    url_lists: list[UrlProgress] = msgspec.field(default_factory=list)
    key: Any = msgspec.field(default=0, name="_key")


class KnownTask(msgspec.Struct, frozen=True, gc=False):
    """A task whose JSON is, byte for byte, that of a task the caller holds: not decoded.

    ``key`` is the hash of that JSON (as :attr:`TaskInfo.key`), ``task_id`` the TaskId
    the caller holds it under.
    """

    task_id: str
    key: int


# What a page of tasks holds when the caller knows some of them already.
PageTask = TaskInfo | KnownTask


class RawTaskListResponse(msgspec.Struct, rename="pascal"):
    """A task list answer whose tasks are left as JSON, for :func:`decode_tasks`."""

    ret_code: Int64
    action: str = ""
    message: str | None = None
    total_count: Int64 | None = None
    task_list: list[msgspec.Raw] = msgspec.field(default_factory=list)


class TaskListResponse(msgspec.Struct, rename="pascal"):
    """The whole answer of ``DescribeNewUcdnPrefetchCacheTask``."""

    ret_code: Int64  # lax mode: a gateway may send "RetCode": "0", as the Go SDK knows
    action: str = ""
    message: str | None = None  # an error answer may carry "Message": null
    total_count: Int64 | None = None
    task_list: list[TaskInfo] = msgspec.field(default_factory=list)


class DomainInfo(msgspec.Struct, rename="pascal", gc=False):
    """One domain of a project (``GetUcdnDomainInfoList``'s ``DomainInfoList``)."""

    domain: str = ""
    domain_id: str = ""


class DomainListResponse(msgspec.Struct, rename="pascal"):
    """The whole answer of ``GetUcdnDomainInfoList``: one page of a project's domains."""

    ret_code: Int64
    action: str = ""
    message: str | None = None
    total_count: Int64 | None = None
    domain_info_list: list[DomainInfo] = msgspec.field(default_factory=list)


class QuotaResponse(msgspec.Struct, rename="pascal"):
    """The answer of ``GetUcdnDomainPrefetchRefreshState``: a domain's daily quotas and use."""

    ret_code: Int64
    action: str = ""
    message: str | None = None
    prefetch_quota: Int64 = 0
    submit_prefetch_count: Int64 = 0
    refresh_file_quota: Int64 = 0
    submit_refresh_file: Int64 = 0
    refresh_dir_quota: Int64 = 0
    submit_refresh_dir: Int64 = 0


class PrefetchEnableResponse(msgspec.Struct, rename="pascal"):
    """The answer of ``GetUcdnDomainPrefetchEnable``: ``Enable`` is 1 when prefetch is on."""

    ret_code: Int64
    action: str = ""
    message: str | None = None
    enable: Int64 = 0


class ProjectInfo(msgspec.Struct, rename="pascal", gc=False):
    """One project of the account (``GetProjectList``'s ``ProjectSet``)."""

    project_id: str = ""
    project_name: str = ""
    is_default: bool = False
    create_time: Int64 = 0
    member_count: Int64 = 0


class ProjectListResponse(msgspec.Struct, rename="pascal"):
    """The whole answer of ``GetProjectList``: every project the key can see, no paging."""

    ret_code: Int64
    action: str = ""
    message: str | None = None
    project_count: Int64 | None = None
    project_set: list[ProjectInfo] = msgspec.field(default_factory=list)


_Shape = TypeVar("_Shape")


class InvalidResponseError(ValueError):
    """The answer is not JSON, or not the shape above; the message names where, never a value."""


# The answer shapes, one per kind of action; every one carries RetCode and Message.
Answer = TypeVar(
    "Answer",
    TaskListResponse,
    RawTaskListResponse,
    DomainListResponse,
    QuotaResponse,
    PrefetchEnableResponse,
    ProjectListResponse,
)
_SHAPES: Final = (
    TaskListResponse,
    RawTaskListResponse,
    DomainListResponse,
    QuotaResponse,
    PrefetchEnableResponse,
    ProjectListResponse,
    TaskInfo,
)
_DECODERS: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    shape: msgspec.json.Decoder(shape, strict=False) for shape in _SHAPES
}


def decode_response(body: bytes) -> TaskListResponse:
    """The validated task list answer in ``body``, or :class:`InvalidResponseError`."""
    return decode_answer(body, TaskListResponse)


def decode_answer(body: bytes, shape: type[Answer]) -> Answer:
    """The validated answer of shape ``shape`` in ``body``, or :class:`InvalidResponseError`."""
    return _decode(body, shape, "")


def decode_tasks(tasks: list[msgspec.Raw], known: Mapping[int, str]) -> list[PageTask]:
    """The tasks of a :class:`RawTaskListResponse`: those whose JSON hashes to a key of
    ``known`` as :class:`KnownTask`, the others decoded and validated, or
    :class:`InvalidResponseError` naming where.

    Hashing a task's JSON costs about a tenth of decoding it, and a task finished long
    ago comes back byte for byte the same on every full sync.
    """
    decoded: list[PageTask] = []
    for index, raw in enumerate(tasks):
        body = bytes(raw)
        key = hash(body)
        task_id = known.get(key)
        if task_id is not None:
            decoded.append(KnownTask(task_id, key))
            continue
        task = _decode(body, TaskInfo, f".TaskList[{index}]")
        task.key = key
        decoded.append(task)
    return decoded


def _decode(body: bytes, shape: type[_Shape], at: str) -> _Shape:
    """``body`` decoded as ``shape``; ``at`` is where it lies in the answer, for the error."""
    decoder: msgspec.json.Decoder[_Shape] = _DECODERS[shape]
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError too
        message = str(error)
        if at and "`$" not in message:  # msgspec names no place for the value itself
            message += " - at `$`"
        raise InvalidResponseError(message.replace("`$", f"`${at}", 1)) from None
    except UnicodeDecodeError:  # msgspec's own error for a string that is not UTF-8
        raise InvalidResponseError("JSON is malformed: a string is not valid UTF-8") from None
    except RecursionError:  # msgspec walks nesting on the C stack, even in skipped fields
        raise InvalidResponseError("JSON is nested too deeply") from None
