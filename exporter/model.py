"""The shapes of the API's answer, validated by pydantic straight from the response bytes.

TypedDicts rather than BaseModel classes: pydantic validates them in Rust while it
parses the JSON, and yields plain dicts, which costs less than ``json.loads`` alone,
where a model instance per URL costs several times more (see benchmarks/).
Every field but ``RetCode`` is optional, as documented; unknown fields are ignored.
"""

from typing import Final, NotRequired

from pydantic import ConfigDict, TypeAdapter, with_config
from typing_extensions import TypedDict

STATUSES: Final = ("success", "wait", "process", "failure", "unknown")
FINISHED: Final = frozenset({"success", "failure"})
UNFINISHED: Final = frozenset({"wait", "process"})
# The API's own spelling of "unknown" is a documented value, not an anomaly.
_DOCUMENTED_UNKNOWN: Final = "unknow"


@with_config(ConfigDict(extra="ignore"))
class UrlProgress(TypedDict):
    """One URL of a prefetch task (``UrlProgressInfo``)."""

    Url: NotRequired[str]
    CreateTime: NotRequired[int]
    FinishTime: NotRequired[int]
    Status: NotRequired[str]
    Progress: NotRequired[int]


@with_config(ConfigDict(extra="ignore"))
class TaskInfo(TypedDict):
    """One prefetch task (``TaskInfo``)."""

    TaskId: NotRequired[str]
    CreateTime: NotRequired[int]
    Status: NotRequired[str]
    UrlLists: NotRequired[list[UrlProgress]]


@with_config(ConfigDict(extra="ignore"))
class TaskListResponse(TypedDict):
    """The whole answer of ``DescribeNewUcdnPrefetchCacheTask``."""

    RetCode: int
    Action: NotRequired[str]
    Message: NotRequired[str]
    TotalCount: NotRequired[int]
    TaskList: NotRequired[list[TaskInfo]]


RESPONSE_ADAPTER: Final = TypeAdapter(TaskListResponse)


def normalize_status(raw: str | None) -> tuple[str, bool]:
    """Map an API status to one of :data:`STATUSES`; the flag says whether it was anomalous.

    ``unknow`` (the API's spelling) becomes ``unknown`` quietly; a missing status or any
    value outside the documented enum becomes ``unknown`` and is flagged.
    """
    if raw in STATUSES and raw != "unknown":
        return raw, False
    return "unknown", raw != _DOCUMENTED_UNKNOWN
