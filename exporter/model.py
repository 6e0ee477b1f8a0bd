"""The shapes of the API's answer, validated by pydantic straight from the response bytes.

TypedDicts rather than BaseModel classes: pydantic validates them in Rust while it
parses the JSON, and yields plain dicts, which costs less than ``json.loads`` alone,
where a model instance per URL costs several times more (see benchmarks/).
Every field but ``RetCode`` is optional, as documented; unknown fields are ignored.
"""

from typing import Annotated, Final, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

STATUSES: Final = ("success", "wait", "process", "failure", "unknown")
FINISHED: Final = frozenset({"success", "failure"})
UNFINISHED: Final = frozenset({"wait", "process"})
# The gateway's integers are 64-bit. JSON allows any length, and an integer beyond a
# float's range would make every sum, division and exposition of it raise: such an
# answer is invalid, and checking it here costs nothing next to parsing it.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


@with_config(ConfigDict(extra="ignore"))
class UrlProgress(TypedDict):
    """One URL of a prefetch task (``UrlProgressInfo``)."""

    Url: NotRequired[str]
    CreateTime: NotRequired[Int64]
    FinishTime: NotRequired[Int64]
    Status: NotRequired[str]
    Progress: NotRequired[Int64]


@with_config(ConfigDict(extra="ignore"))
class TaskInfo(TypedDict):
    """One prefetch task (``TaskInfo``)."""

    TaskId: NotRequired[str]
    CreateTime: NotRequired[Int64]
    Status: NotRequired[str]
    UrlLists: NotRequired[list[UrlProgress]]


@with_config(ConfigDict(extra="ignore"))
class TaskListResponse(TypedDict):
    """The whole answer of ``DescribeNewUcdnPrefetchCacheTask``."""

    RetCode: int
    Action: NotRequired[str]
    Message: NotRequired[str]
    TotalCount: NotRequired[Int64]
    TaskList: NotRequired[list[TaskInfo]]


RESPONSE_ADAPTER: Final = TypeAdapter(TaskListResponse)
