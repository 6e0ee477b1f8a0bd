"""The shapes of the API's answer, decoded and validated by msgspec straight from the bytes.

TypedDicts, so that the rest of the package reads plain dicts. msgspec checks every
field's type and bound while it parses the JSON, and builds only the fields named here
(unknown ones are skipped, not built): on 100,000 URLs that costs about 0.4x plain
``json.loads``, where pydantic's ``TypeAdapter`` over the same TypedDicts costs about 1x
and a pydantic model instance per URL about 4x (see the README's Performance section).
Every field but ``RetCode`` is optional, as documented. Lax mode accepts what the
gateway may quote or print as a float: ``"17"`` and ``17.0`` are the integer 17.
"""

from typing import Annotated, Final, NotRequired

import msgspec
from typing_extensions import TypedDict

STATUSES: Final = ("success", "wait", "process", "failure", "unknown")
FINISHED: Final = frozenset({"success", "failure"})
UNFINISHED: Final = frozenset({"wait", "process"})
# The gateway's integers are 64-bit. JSON allows any length, and an integer beyond a
# float's range would make every sum, division and exposition of it raise: such an
# answer is invalid, and checking it while parsing costs nothing next to the parsing.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class UrlProgress(TypedDict):
    """One URL of a prefetch task (``UrlProgressInfo``)."""

    Url: NotRequired[str]
    CreateTime: NotRequired[Int64]
    FinishTime: NotRequired[Int64]
    Status: NotRequired[str]
    Progress: NotRequired[Int64]


class TaskInfo(TypedDict):
    """One prefetch task (``TaskInfo``)."""

    TaskId: NotRequired[str]
    CreateTime: NotRequired[Int64]
    Status: NotRequired[str]
    UrlLists: NotRequired[list[UrlProgress]]


class TaskListResponse(TypedDict):
    """The whole answer of ``DescribeNewUcdnPrefetchCacheTask``."""

    RetCode: int
    Action: NotRequired[str]
    Message: NotRequired[str]
    TotalCount: NotRequired[Int64]
    TaskList: NotRequired[list[TaskInfo]]


class InvalidResponseError(ValueError):
    """The answer is not JSON, or not the shape above; the message names where, never a value."""


_DECODER: Final = msgspec.json.Decoder(TaskListResponse, strict=False)


def decode_response(body: bytes) -> TaskListResponse:
    """The validated answer in ``body``, or :class:`InvalidResponseError`."""
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError too
        raise InvalidResponseError(str(error)) from None
