"""The one-shot modes: ``--check-config`` (one call per target) and ``--once`` (one collection).

``--once`` writes the text exposition to stdout or, atomically, to a file that
node_exporter's textfile collector reads.
"""

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import generate_latest

from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.config import Settings

PROG = "ucdn-prefetch-exporter"


def check_config(settings: Settings, client: ApiClient) -> int:
    """One signed call per target; a table of who answered; 0 when all did."""
    rows = [("TARGET", "REACHABLE", "TASKS IN WINDOW", "TIME")]
    failures = 0
    for target in settings.targets:
        end = int(time.time())
        started = time.monotonic()
        try:
            count = client.count_tasks(
                target.project_id,
                is_dcdn=target.is_dcdn,
                begin=end - settings.lookback_seconds,
                end=end,
                deadline=Deadline.after(settings.request_timeout_seconds),
            )
            reachable, tasks = "yes", str(count)
        except ApiError as error:
            failures += 1
            request = f"; request {error.request_id}" if error.request_id else ""
            reachable, tasks = f"no ({error.reason}: {error.detail}{request})", "-"
        elapsed = f"{time.monotonic() - started:.2f}s"
        rows.append((f"{target.project_label}/{target.platform}", reachable, tasks, elapsed))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 1 if failures else 0


def collect_once(settings: Settings, collector: UcdnCollector, output: Path | None) -> int:
    """Collect every target and kind once; write the text exposition; 0 when all were up."""
    metrics = collector.collect_within(Deadline.after(settings.max_scrape_timeout_seconds))
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
