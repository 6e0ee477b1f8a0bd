"""Which targets this replica collects, and what is known of each: its account, its project's
name, how its last collections went, and how the discovery of its account's projects went.

The web pages (the landing page's status table, ``/sd``) read a :class:`TargetCatalogue`;
the collector keeps it up to date. Targets come from the configured accounts: a list of
projects, or the projects an account's discovery found, narrowed to this replica's shard.
"""

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from exporter.collection.discovery import AccountProjects, ProjectList
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.settings.target import PLATFORMS, Platform, Target

log = logging.getLogger(__name__)
# FNV-1a, 32 bit: a hash every language has, so that a tool can say where a project lands.
_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


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


def shard_of(project_id: str, total_shards: int) -> int:
    """The shard (0 to ``total_shards - 1``) that collects ``project_id``'s targets: FNV-1a
    32-bit of its UTF-8 bytes, modulo the total; the default project's "" included.

    It depends on the project alone, so that a project's platforms, kinds and quotas stay
    on one replica, and on nothing of the process, so that every replica agrees.
    """
    if total_shards < 1:
        raise ValueError(f"total_shards must be >= 1, not {total_shards}")
    value = _FNV_OFFSET
    for byte in project_id.encode():
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value % total_shards


@dataclass(frozen=True)
class Account:
    """An account as the catalogue collects it: its projects, the platforms collected for
    each, and the client its requests go through (its own keys and URL).

    ``only``, when given, keeps just those targets: a fixed list that is not every
    project on every platform.
    """

    projects: AccountProjects
    platforms: tuple[Platform, ...]
    client: ApiClient
    only: frozenset[Target] | None = None

    @property
    def name(self) -> str:
        """The account's name."""
        return self.projects.account


@dataclass
class _Status:
    """A target's last collection of one kind (mutable, under the catalogue's lock)."""

    last_attempt: float | None = None
    last_success: float | None = None
    last_failure_reason: str | None = None
    last_requests: int = 0


class Catalogue:
    """The targets of every account, narrowed to this replica's shard; implements
    :class:`TargetCatalogue`.

    Accounts are taken in the order given (the accounts file's): a target that two
    accounts would publish is collected from the first, and the later account's copy is
    skipped with one warning naming both. ``discovery_seconds`` bounds a discovery that
    :meth:`entries` runs (the pages' calls, which have no scrape deadline).
    """

    def __init__(
        self,
        accounts: Sequence[Account],
        *,
        shard: int = 0,
        total_shards: int = 1,
        kinds: Sequence[str] = ("prefetch",),
        discovery_seconds: float = 10.0,
    ) -> None:
        names = [account.name for account in accounts]
        if len(set(names)) != len(names):
            raise ValueError(f"account names repeat: {', '.join(names)}")
        if not 0 <= shard < total_shards:
            raise ValueError(f"shard must be in 0..{total_shards - 1}, not {shard}")
        self._accounts = list(accounts)
        self._shard = shard
        self._total_shards = total_shards
        self._kinds = tuple(kinds)
        self._discovery_seconds = discovery_seconds
        self._lock = threading.Lock()
        self._statuses: dict[tuple[Target, str], _Status] = {}
        self._warned: set[tuple[Target, str, str]] = set()

    @classmethod
    def listed(cls, client: ApiClient, targets: Sequence[Target]) -> "Catalogue":
        """One account, ``default``, collecting exactly ``targets`` through ``client``."""
        projects = AccountProjects("default", client, [t.project_id for t in targets])
        platforms = tuple(sorted({t.platform for t in targets}, key=PLATFORMS.index))
        return cls([Account(projects, platforms, client, only=frozenset(targets))])

    @property
    def shard(self) -> tuple[int, int]:
        """This replica's shard and the total number of shards."""
        return self._shard, self._total_shards

    @property
    def discovers(self) -> bool:
        """Whether any account's projects are discovered (its targets may change)."""
        return any(account.projects.known().mode == "auto" for account in self._accounts)

    def track(self, kinds: Iterable[str]) -> None:
        """The kinds of task collected for every target (what :meth:`statuses` lists)."""
        self._kinds = tuple(kinds)

    def refresh(self, deadline: Deadline) -> list[TargetEntry]:
        """The targets now, after every discovery that is due, within ``deadline``."""
        lists = [account.projects.refresh(deadline) for account in self._accounts]
        return self._entries(lists)

    def entries(self) -> list[TargetEntry]:
        """This replica's targets now, sorted (discovery runs first if it is due)."""
        return self.refresh(Deadline.after(self._discovery_seconds))

    def current(self) -> list[TargetEntry]:
        """This replica's targets as the last discoveries left them: no call."""
        return self._entries([account.projects.known() for account in self._accounts])

    def client(self, account: str) -> ApiClient:
        """The client of the account named ``account`` (a KeyError for another name)."""
        for candidate in self._accounts:
            if candidate.name == account:
                return candidate.client
        raise KeyError(account)

    def clients(self) -> list[ApiClient]:
        """Every account's client, each once, in account order."""
        return list({id(a.client): a.client for a in self._accounts}.values())

    def record(
        self,
        target: Target,
        kind: str,
        attempt: float,
        *,
        success: float | None,
        failure_reason: str | None,
        requests: int,
    ) -> None:
        """How ``target``'s collection of ``kind`` that started at ``attempt`` went."""
        with self._lock:
            status = self._statuses.setdefault((target, kind), _Status())
            status.last_attempt = attempt
            if success is not None:
                status.last_success = success
            status.last_failure_reason = failure_reason
            status.last_requests = requests

    def forget(self, targets: Iterable[Target]) -> None:
        """Drop what is known of targets that are no longer collected."""
        gone = set(targets)
        with self._lock:
            for key in [key for key in self._statuses if key[0] in gone]:
                del self._statuses[key]

    def statuses(self) -> list[TargetStatus]:
        """Every target's last collection of every kind, in the order of :meth:`entries`."""
        entries = self.current()
        with self._lock:
            return [
                _status_of(entry, kind, self._statuses.get((entry.target, kind), _Status()))
                for entry in entries
                for kind in self._kinds
            ]

    def discoveries(self) -> list[DiscoveryState]:
        """Every account's discovery, by account name."""
        lists = [account.projects.known() for account in self._accounts]
        return sorted((_state_of(known) for known in lists), key=lambda state: state.account)

    def project_lists(self) -> list[ProjectList]:
        """Every account's projects as last known, in account order (the metrics' source)."""
        return [account.projects.known() for account in self._accounts]

    def _entries(self, lists: Sequence[ProjectList]) -> list[TargetEntry]:
        owners: dict[Target, TargetEntry] = {}
        for account, known in zip(self._accounts, lists, strict=True):
            for project in known.projects:
                if shard_of(project.project_id, self._total_shards) != self._shard:
                    continue
                for platform in account.platforms:
                    target = Target(project.project_id, platform)
                    if account.only is not None and target not in account.only:
                        continue
                    entry = TargetEntry(target, account.name, project.name)
                    first = owners.setdefault(target, entry)
                    if first is not entry:
                        self._warn_clash(target, first.account, account.name)
        return sorted(owners.values())

    def _warn_clash(self, target: Target, first: str, later: str) -> None:
        """One warning per clash, not one per scrape."""
        with self._lock:
            if (target, first, later) in self._warned:
                return
            self._warned.add((target, first, later))
        fields = {
            "project_id": target.project_label,
            "platform": target.platform,
            "account": first,
            "skipped_account": later,
        }
        log.warning(
            "target published by two accounts: collected from the first", extra={"fields": fields}
        )


def _status_of(entry: TargetEntry, kind: str, status: _Status) -> TargetStatus:
    return TargetStatus(
        entry,
        kind,
        status.last_attempt,
        status.last_success,
        status.last_failure_reason,
        status.last_requests,
    )


def _state_of(known: ProjectList) -> DiscoveryState:
    return DiscoveryState(
        known.account,
        known.mode,
        len(known.projects),
        known.last_attempt,
        known.last_success,
        known.last_error,
    )
