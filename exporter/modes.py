"""The one-shot modes: ``--check-config`` (every action once) and ``--once`` (one collection).

``--check-config`` calls each action the configuration will call, once, so that a key
without the permission for one of them fails here rather than at the first scrape that
needs it: for every account, its project discovery (when its projects are ``auto``), then
each of its targets and projects as the discovery found them. ``--once`` writes the
text exposition to stdout or, atomically, to a file that node_exporter's textfile
collector reads.
"""

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from prometheus_client import generate_latest

from exporter.collection.catalogue import Catalogue, TargetEntry
from exporter.collection.kinds import TaskKind
from exporter.gateway.answers import (
    DOMAINS_ACTION,
    PREFETCH_ENABLE_ACTION,
    PROJECTS_ACTION,
    QUOTA_ACTION,
    QuotaResponse,
)
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.domain_calls import DomainList
from exporter.gateway.outcomes import ApiError
from exporter.gateway.retcodes import hint_for
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.config import Settings
from exporter.settings.target import DEFAULT_PROJECT_LABEL
from exporter.summary.target_summary import SummaryLimits

PROG = "ucdn-prefetch-exporter"
T = TypeVar("T")


@dataclass(frozen=True)
class _Check:
    """One call of ``--check-config``: where, which action, how long, and what came back."""

    where: str
    action: str
    seconds: float | None  # None: not tried
    result: str
    hint: str | None = None
    failed: bool = False


def check_config(settings: Settings, catalogue: Catalogue) -> int:
    """Each action the configuration calls, once per account, target or project; a table;
    0 when all answered.

    Every discovering account's project list; the task list of every kind for every
    target; with the quota sweep on, every project's domain list, then one domain's quota
    and prefetch switch.
    """
    checks = list(_discovery_checks(settings, catalogue))
    entries = catalogue.current()
    for entry in entries:
        checks.extend(_task_checks(settings, catalogue.client(entry.account), entry))
    if settings.quota_interval_seconds > 0:
        first_of_project = {e.target.project_id: e for e in reversed(entries)}
        for project_id in sorted(first_of_project):
            client = catalogue.client(first_of_project[project_id].account)
            checks.extend(_domain_checks(settings, client, project_id))
    _print_table(checks)
    return 1 if any(check.failed for check in checks) else 0


def _discovery_checks(settings: Settings, catalogue: Catalogue) -> Iterator[_Check]:
    """A row per discovering account: its discovery, run now, and what it found."""
    started = time.monotonic()
    catalogue.refresh(_deadline(settings))
    seconds = time.monotonic() - started
    for known in catalogue.project_lists():
        if known.mode != "auto":
            continue
        if known.last_error is None:
            yield _Check(
                known.account, PROJECTS_ACTION, seconds, f"ok: {len(known.projects)} projects"
            )
            continue
        tip = hint_for(known.last_error.partition(": ")[2], PROJECTS_ACTION)
        result = f"failed ({known.last_error})"
        yield _Check(known.account, PROJECTS_ACTION, seconds, result, tip, failed=True)


def _task_checks(settings: Settings, client: ApiClient, entry: TargetEntry) -> Iterator[_Check]:
    target = entry.target
    for kind in settings.task_kinds:
        action = TaskKind.named(kind, SummaryLimits()).action
        end = int(time.time())
        count = partial(
            client.count_tasks,
            target.project_id,
            is_dcdn=target.is_dcdn,
            begin=end - settings.lookback_seconds,
            end=end,
            deadline=_deadline(settings),
            action=action,
        )
        where = f"{target.project_label}/{target.platform}"
        check, _ = _call(where, action, count, "{} tasks in the window".format)
        yield check


def _domain_checks(settings: Settings, client: ApiClient, project_id: str) -> Iterator[_Check]:
    where = project_id or DEFAULT_PROJECT_LABEL
    listing = partial(client.list_domains, project_id, deadline=_deadline(settings), limit=1)
    # Unpacked in the same statement, mypy would type the answer after ``domains``
    # (DomainList | None) and refuse _domain_count.
    listed = _call(where, DOMAINS_ACTION, listing, _domain_count)
    check, domains = listed
    yield check
    if domains is None or not domains.domains:
        why = "the domain list failed" if domains is None else "the project has no domain"
        for action in (QUOTA_ACTION, PREFETCH_ENABLE_ACTION):
            yield _Check(where, action, None, f"not tried: {why}")
        return
    domain_id = domains.domains[0].domain_id
    quota = partial(client.domain_quota, project_id, domain_id, deadline=_deadline(settings))
    yield _call(where, QUOTA_ACTION, quota, _quota_use)[0]
    switch = partial(client.prefetch_enabled, project_id, domain_id, deadline=_deadline(settings))
    yield _call(where, PREFETCH_ENABLE_ACTION, switch, _switch)[0]


def _domain_count(domains: DomainList) -> str:
    return f"{domains.total} domains"


def _quota_use(quota: QuotaResponse) -> str:
    return f"{quota.submit_prefetch_count} of {quota.prefetch_quota} prefetches used today"


def _switch(enabled: bool) -> str:
    return f"prefetch {'on' if enabled else 'off'}"


def _deadline(settings: Settings) -> Deadline:
    return Deadline.after(settings.request_timeout_seconds)


def _call(
    where: str, action: str, call: Callable[[], T], describe: Callable[[T], str]
) -> tuple[_Check, T | None]:
    """Make one call; its row, and its answer unless it failed."""
    started = time.monotonic()
    try:
        answer = call()
    except ApiError as error:
        seconds = time.monotonic() - started
        request = f"; request {error.request_id}" if error.request_id else ""
        result = f"failed ({error.reason}: {error.detail}{request})"
        return _Check(where, action, seconds, result, _hint(error, action), failed=True), None
    return _Check(where, action, time.monotonic() - started, f"ok: {describe(answer)}"), answer


def _hint(error: ApiError, action: str) -> str | None:
    """What to check for the error's RetCode, unless its detail says it already."""
    tip = hint_for(error.detail, action)
    return tip if tip and tip not in error.detail else None


def _seconds(check: _Check) -> str:
    return "-" if check.seconds is None else f"{check.seconds:.2f}s"


def _print_table(checks: list[_Check]) -> None:
    """One row per call, the result last; a hint on its own line, under the result."""
    rows = [("TARGET", "ACTION", "TIME", "RESULT")]
    rows += [(check.where, check.action, _seconds(check), check.result) for check in checks]
    widths = [max(len(row[column]) for row in rows) + 2 for column in range(3)]
    hints = [None, *(check.hint for check in checks)]
    for (where, action, seconds, result), tip in zip(rows, hints, strict=True):
        print(f"{where:<{widths[0]}}{action:<{widths[1]}}{seconds:<{widths[2]}}{result}")
        if tip:
            print(f"{'':<{sum(widths)}}hint: {tip}")


def collect_once(settings: Settings, collector: UcdnCollector, output: Path | None) -> int:
    """Collect every target and kind once; write the text exposition; 0 when all were up."""
    # A list: written, then read again for the targets' health.
    metrics = list(collector.collect_within(Deadline.after(settings.max_scrape_timeout_seconds)))
    text = generate_latest(MetricsSnapshot(metrics))
    if output is None:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    else:
        try:
            _write_atomically(output, text)
        except OSError as error:
            # strerror alone: the exception's text would repeat the path.
            print(
                f"{PROG}: cannot write --output: {error.strerror or 'write failed'}",
                file=sys.stderr,
            )
            return 1
    up_families = {kind.families.up.name for kind in collector.kinds}
    up = [sample.value for m in metrics if m.name in up_families for sample in m.samples]
    return 0 if up and all(value == 1 for value in up) else 1


def output_problem(path: Path) -> str | None:
    """Why ``--output`` cannot be written, found before collecting rather than after."""
    directory = path.parent
    if not directory.is_dir():
        return "its directory does not exist"
    if path.is_dir():
        return "is a directory"
    # The temporary file is created in the directory, then renamed over the output.
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        return "its directory is not writable"
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers (node_exporter's textfile collector) never see a half-written file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
