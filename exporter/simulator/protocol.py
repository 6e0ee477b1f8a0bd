"""The simulated gateway's wire protocol: actions, keys, RetCodes, and what a dataset serves.

Shared by every other module of the simulator; it imports none of them. The action
names are the exporter's own (:mod:`exporter.gateway.answers`), so the two cannot drift apart.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from exporter.gateway.answers import PREFETCH_ACTION

ACTION = PREFETCH_ACTION
RESPONSE_ACTION = ACTION + "Response"
# The account's projects: the exporter's discovery calls it, so the simulator answers it too.
PROJECT_LIST_ACTION = "GetProjectList"

# Obviously fake keys: the demo signs and checks requests like the real gateway.
DEMO_PUBLIC_KEY = "demo-public-key"
DEMO_PRIVATE_KEY = "demo-private-key-not-a-secret"

# Error codes in the style of UCloud's gateway (errors are HTTP 200 with RetCode != 0).
RET_RATE_LIMITED = 153
RET_ACTION_MISSING = 160
RET_ACTION_NOT_EXIST = 161
RET_SIGNATURE_ERROR = 171
RET_PARAMS_INVALID = 230
RET_PROJECT_NOT_EXIST = 292
RET_IAM_DENIED = 299
# Every answer of the gateway carries its request id, which the provider's support asks for.
REQUEST_ID_HEADER = "X-UCLOUD-REQUEST-UUID"

DAY_SECONDS = 86400
MAX_REQUEST_BYTES = 1 << 20

Task = dict[str, Any]
"""A TaskInfo exactly as the API sends it."""

Target = tuple[str, bool]
"""``(project_id, is_dcdn)``; project id ``""`` is the account's default project."""

Encoding = Literal["query", "form", "json"]


def json_bytes(payload: object) -> bytes:
    # msgspec writes compact JSON a dozen times faster than json.dumps (UTF-8 rather than
    # \u escapes): a page of 5,000 URLs costs 1 ms instead of 12, so that a benchmark
    # times the exporter, not us.
    return msgspec.json.encode(payload)


def error_payload(code: int, message: str, action: str = ACTION) -> dict[str, Any]:
    """An error answer as the gateway writes it: HTTP 200, RetCode and Message."""
    return {"Action": action + "Response", "RetCode": code, "Message": message}


# The documented daily limits of one domain.
PREFETCH_QUOTA = 500
REFRESH_FILE_QUOTA = 700
REFRESH_DIR_QUOTA = 20


@dataclass(frozen=True)
class Domain:
    """One accelerated domain of a project, as ``GetUcdnDomainInfoList`` lists it."""

    name: str
    domain_id: str

    def as_answer(self) -> dict[str, str]:
        """The ``DomainInfoList`` entry."""
        return {"Domain": self.name, "DomainId": self.domain_id}


@dataclass(frozen=True)
class Quota:
    """One domain's daily quotas and what was submitted today (the documented defaults)."""

    prefetch_quota: int = PREFETCH_QUOTA
    submit_prefetch_count: int = 0
    refresh_file_quota: int = REFRESH_FILE_QUOTA
    submit_refresh_file: int = 0
    refresh_dir_quota: int = REFRESH_DIR_QUOTA
    submit_refresh_dir: int = 0

    def as_answer(self) -> dict[str, int]:
        """The fields of ``GetUcdnDomainPrefetchRefreshState``'s answer."""
        return {
            "PrefetchQuota": self.prefetch_quota,
            "SubmitPrefetchCount": self.submit_prefetch_count,
            "RefreshFileQuota": self.refresh_file_quota,
            "SubmitRefreshFile": self.submit_refresh_file,
            "RefreshDirQuota": self.refresh_dir_quota,
            "SubmitRefreshDir": self.submit_refresh_dir,
        }


class Dataset(Protocol):
    """Where the server gets its answers from: tasks, domains and their quotas."""

    def tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """Return the target's prefetch tasks created in ``[begin, end]``, newest first."""
        ...

    def refresh_tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """Return the target's refresh tasks (with ``Type``) in ``[begin, end]``, newest first."""
        ...

    def domains(self, project_id: str) -> Sequence[Domain]:
        """Return the project's domains, in the order the list pages through them."""
        ...

    def quota(self, project_id: str, domain_id: str) -> Quota | None:
        """Return the domain's quotas now, or None when the project has no such domain."""
        ...

    def prefetch_enabled(self, project_id: str, domain_id: str) -> bool | None:
        """Return whether prefetch is on for the domain, or None when there is no such domain."""
        ...


class PrefetchOnlyDataset:
    """A base for a :class:`Dataset` of prefetch tasks alone: no refresh tasks, no domains.

    A subclass gives :meth:`tasks`; the rest of the family answers as for a project with
    nothing in it.
    """

    def refresh_tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """No refresh tasks."""
        return []

    def domains(self, project_id: str) -> Sequence[Domain]:
        """No domains."""
        return []

    def quota(self, project_id: str, domain_id: str) -> Quota | None:
        """No such domain."""
        return None

    def prefetch_enabled(self, project_id: str, domain_id: str) -> bool | None:
        """No such domain."""
        return None
