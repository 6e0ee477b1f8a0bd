"""Which targets this replica collects, and what is known of each: its account, its project's
name, how its last collections went, and how the discovery of its account's projects went.

The web pages (the landing page's status table, ``/sd``) read a :class:`TargetCatalogue`;
the collector keeps it up to date. Targets come from the configured accounts: a list of
projects, or the projects an account's discovery found, narrowed to this replica's shard.
"""

from dataclasses import dataclass
from typing import Literal, Protocol

from exporter.settings.target import Target


@dataclass(frozen=True, order=True)
class TargetEntry:
    """A target this replica collects, with the account it belongs to and its project's name
    (empty when the account's projects are listed, not discovered)."""

    target: Target
    account: str
    project_name: str = ""


@dataclass(frozen=True)
class TargetStatus:
    """How a target's last collection of one kind of task went (wall-clock seconds)."""

    entry: TargetEntry
    kind: str  # "prefetch" or "refresh"
    last_attempt: float | None  # None: not collected yet
    last_success: float | None
    last_failure_reason: str | None  # the outcome's reason; None when the last one succeeded
    last_requests: int  # API requests the last collection cost


@dataclass(frozen=True)
class DiscoveryState:
    """How the discovery of one account's projects went; ``mode`` "list" when they are listed."""

    account: str
    mode: Literal["list", "auto"]
    projects: int  # projects collected from this account (after the filter, before sharding)
    last_attempt: float | None
    last_success: float | None
    last_error: str | None  # None when the last discovery succeeded


class TargetCatalogue(Protocol):
    """The targets of this replica and their state, for the pages that show them."""

    @property
    def shard(self) -> tuple[int, int]:
        """This replica's shard and the total number of shards (0, 1 when not sharded)."""
        ...

    def entries(self) -> list[TargetEntry]:
        """This replica's targets now, sorted (discovery runs first if it is due)."""
        ...

    def statuses(self) -> list[TargetStatus]:
        """Every target's last collection of every kind, in the order of :meth:`entries`."""
        ...

    def discoveries(self) -> list[DiscoveryState]:
        """Every account's discovery, by account name."""
        ...
