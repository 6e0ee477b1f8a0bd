"""The simulated gateway's wire protocol: actions, keys, RetCodes, and what a dataset serves.

Shared by every other module of the simulator; it imports none of them.
"""

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

ACTION = "DescribeNewUcdnPrefetchCacheTask"
RESPONSE_ACTION = ACTION + "Response"

# Obviously fake keys: the demo signs and checks requests like the real gateway.
DEMO_PUBLIC_KEY = "demo-public-key"
DEMO_PRIVATE_KEY = "demo-private-key-not-a-secret"

# Error codes in the style of UCloud's gateway (errors are HTTP 200 with RetCode != 0).
RET_RATE_LIMITED = 153
RET_ACTION_MISSING = 160
RET_ACTION_NOT_EXIST = 161
RET_SIGNATURE_ERROR = 171
RET_PARAMS_INVALID = 230
# Every answer of the gateway carries its request id, which the provider's support asks for.
REQUEST_ID_HEADER = "X-UCLOUD-REQUEST-UUID"

DAY_SECONDS = 86400
MAX_REQUEST_BYTES = 1 << 20

Task = dict[str, Any]
"""A TaskInfo exactly as the API sends it."""

Target = tuple[str, bool]
"""``(project_id, is_dcdn)``; project id ``""`` is the account's default project."""

Encoding = Literal["query", "form", "json"]
WrongTypes = Literal[
    "task_list_string",
    "progress_string",
    "huge_numbers",
    "negative_times",
    "null_fields",
    "missing_fields",
]
EchoPlace = Literal["message", "header", "malformed_header"]


def json_bytes(payload: object) -> bytes:
    # msgspec writes compact JSON a dozen times faster than json.dumps (UTF-8 rather than
    # \u escapes): a page of 5,000 URLs costs 1 ms instead of 12, so that a benchmark
    # times the exporter, not us.
    return msgspec.json.encode(payload)


def error_payload(code: int, message: str) -> dict[str, Any]:
    return {"Action": RESPONSE_ACTION, "RetCode": code, "Message": message}


class Dataset(Protocol):
    """Where the server gets its tasks from."""

    def tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """Return the target's tasks created in ``[begin, end]``, newest first, then by TaskId."""
        ...
