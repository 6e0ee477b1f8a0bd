"""The landing page: what this exporter is doing, from its targets' catalogue alone.

One row per target and kind of task (its project, platform and account, how its last
collection went and when, the reason of its last failure, the requests it cost), then each
account's project discovery, and the shard this replica is. Plain HTML without scripts,
readable without styles, every value escaped. It reads what the catalogue already knows
(never :meth:`~exporter.collection.catalogue.TargetCatalogue.entries`, which may run a due
discovery), so it never calls the gateway and answers at once even while the gateway hangs.
"""

import html
from collections.abc import Iterable, Sequence
from urllib.parse import urlencode

from exporter.collection.catalogue import (
    DiscoveryState,
    TargetCatalogue,
    TargetEntry,
    TargetStatus,
)
from exporter.settings.target import Target

_NEVER = "never"
_TABLE = '<table border="1" cellpadding="3" style="border-collapse: collapse">'
_TARGET_COLUMNS = (
    "Kind",
    "Project ID",
    "Project name",
    "Platform",
    "Account",
    "Last collection",
    "Seconds ago",
    "Last success, seconds ago",
    "Last failure's reason",
    "Requests",
)
_DISCOVERY_COLUMNS = (
    "Account",
    "Mode",
    "Projects",
    "Last success, seconds ago",
    "Last error",
)


def render_status_page(*, version: str, catalogue: TargetCatalogue, now: float) -> str:
    """The whole page; ``now`` in wall-clock seconds. Reads the statuses, the discoveries
    and the shard only: none of them runs a discovery."""
    statuses = catalogue.statuses()
    # Every target appears in the statuses, once per kind, in the order of the entries.
    entries = list(dict.fromkeys(status.entry for status in statuses))
    sections = [
        _links(entry.target for entry in entries),
        _shard(catalogue.shard),
        _targets_table(len(entries), statuses, now),
        _discoveries_table(catalogue.discoveries(), now),
    ]
    return _PAGE.format(version=html.escape(version), sections="\n".join(sections))


def _links(targets: Iterable[Target]) -> str:
    probes = "".join(
        f'<li><a href="probe?{html.escape(_probe_query(t))}">'
        f"{html.escape(t.project_label)} / {html.escape(t.platform)}</a></li>"
        for t in targets
    )
    return _LINKS.format(probes=probes)


def _probe_query(target: Target) -> str:
    return urlencode({"project_id": target.project_label, "platform": target.platform})


def _shard(shard: tuple[int, int]) -> str:
    index, total = shard
    if total <= 1:
        return "<p>Not sharded: this exporter collects every target of its accounts.</p>"
    return (
        f"<p>Shard {index} of {total} (shards 0 to {total - 1}): this replica collects the "
        f"projects whose hash modulo {total} is {index}.</p>"
    )


def _targets_table(targets: int, statuses: Sequence[TargetStatus], now: float) -> str:
    heading = f"<h2>Targets ({targets})</h2>"
    if not statuses:
        return heading + "\n<p>No target yet.</p>"
    return heading + "\n" + _table(_TARGET_COLUMNS, [_status_row(s, now) for s in statuses])


def _status_row(status: TargetStatus, now: float) -> list[str]:
    return [
        status.kind,
        *_entry_cells(status.entry),
        _outcome(status),
        _seconds_ago(status.last_attempt, now),
        _seconds_ago(status.last_success, now),
        status.last_failure_reason or "",
        str(status.last_requests),
    ]


def _entry_cells(entry: TargetEntry) -> list[str]:
    target = entry.target
    return [target.project_label, entry.project_name, target.platform, entry.account]


def _outcome(status: TargetStatus) -> str:
    if status.last_attempt is None:
        return _NEVER
    return "ok" if status.last_failure_reason is None else "failed"


def _seconds_ago(moment: float | None, now: float) -> str:
    if moment is None:
        return _NEVER
    return str(max(0, round(now - moment)))


def _discoveries_table(discoveries: Sequence[DiscoveryState], now: float) -> str:
    rows = [
        [
            state.account,
            "discovered" if state.mode == "auto" else "listed",
            str(state.projects),
            _seconds_ago(state.last_success, now) if state.mode == "auto" else "",
            state.last_error or "",
        ]
        for state in discoveries
    ]
    heading = "<h2>Accounts and their projects</h2>"
    if not rows:
        return heading + "\n<p>No account.</p>"
    return heading + "\n" + _table(_DISCOVERY_COLUMNS, rows)


def _table(columns: Iterable[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in row) + "</tr>"
        for row in rows
    )
    return f"{_TABLE}\n<tr>{head}</tr>\n{body}\n</table>"


_LINKS = """<ul>
<li><a href="metrics">Metrics</a> (every target, and the exporter's own)</li>
<li>Probe one target (its series only): <ul>{probes}</ul></li>
<li><a href="exporter-metrics">Exporter metrics</a> (the exporter's own only: a job per
replica next to the probes)</li>
<li><a href="sd">Service discovery</a> (this replica's targets for Prometheus'
<code>http_sd_configs</code>, scraped on <code>/probe</code>)</li>
<li><a href="-/healthy">Health</a>, <a href="-/ready">readiness</a></li>
</ul>"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>UCDN Prefetch Exporter</title></head>
<body>
<h1>UCDN Prefetch Exporter</h1>
<p>Version {version}. Prometheus metrics of the prefetch (cache warm-up) and refresh (purge)
tasks and the domains' daily quotas of a UCDN gateway.</p>
{sections}
</body>
</html>
"""
