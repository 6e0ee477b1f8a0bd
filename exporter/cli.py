"""The command line: parse flags, validate settings, wire the parts together and run.

This is the only module that knows every other one. Flags are generated from the
settings model, so ``--help`` always lists every setting with its variable and default.
"""

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from prometheus_client import generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from pydantic import SecretStr

from exporter import __version__
from exporter.aggregate import SummaryLimits
from exporter.app import ExporterApp, MetricsSnapshot, ScrapeTimeouts
from exporter.client import ApiClient, ApiError, ClientOptions
from exporter.collector import PrefetchCollector
from exporter.config import ConfigError, Settings, env_name, flag_name, load_settings
from exporter.deadline import Deadline
from exporter.logs import configure_logging
from exporter.simulator import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, LiveDataset, SimulatedApi
from exporter.webconfig import WebConfigError, load_web_config
from exporter.webserver import WebServer

PROG = "ucdn-prefetch-exporter"
log = logging.getLogger(__name__)
# The exporter-toolkit's flag names, which operators already type for node_exporter.
_TOOLKIT_SPELLINGS = {
    "web_config_file": ("--web.config.file",),
    "listen_address": ("--web.listen-address",),
    "max_requests": ("--web.max-requests",),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line that never repeats a value.

    A mistyped flag followed by the private key would otherwise be echoed back in
    "unrecognized arguments", and the usage block of every flag buries the error.
    """

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [extra.split("=", 1)[0] for extra in extras if extra.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(flags) or '(values without a flag)'}")
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Flags for every setting, plus the modes that are not settings."""
    parser = _Parser(
        prog=PROG,
        description="Prometheus exporter for CDN prefetch (cache warm-up) tasks of "
        "UCloud-compatible UCDN gateways. Every setting is also an environment variable.",
    )
    for name, field in Settings.model_fields.items():
        flags = [flag_name(name)]
        flags.extend(_TOOLKIT_SPELLINGS.get(name, ()))
        default = field.get_default(call_default_factory=True)
        shown = "" if isinstance(default, SecretStr) else _show_default(default)
        help_text = f"{field.description} (env {env_name(name)}{shown})"
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action="store_const", const=True, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, metavar=name.upper(), help=help_text)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings, call the API once per target, print a table and exit "
        "0 when every target answered, else 1",
    )
    modes.add_argument(
        "--once",
        action="store_true",
        help="collect once, write the exposition to stdout (or --output) and exit",
    )
    parser.add_argument(
        "--output", type=Path, help="with --once: write here atomically (textfile collector)"
    )
    return parser


def _show_default(default: Any) -> str:
    if isinstance(default, list):
        default = ",".join(str(item) for item in default)
    if default in ("", None, []):
        return ""
    return f"; default {default}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; return the process' exit status."""
    args = build_parser().parse_args(argv)
    overrides = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    try:
        settings = load_settings(overrides)
        web_config = load_web_config(settings.web_config_file) if settings.web_config_file else None
    except (ConfigError, WebConfigError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_level, settings.log_format, [settings.private_key.get_secret_value()]
    )
    with _upstream(settings) as settings:
        client = _client(settings)
        collector = _collector(settings, client)
        try:
            if args.check_config:
                return check_config(settings, client)
            if args.once:
                return collect_once(settings, collector, args.output)
            return serve(settings, collector, web_config)
        finally:
            collector.close()
            client.close()


@contextlib.contextmanager
def _upstream(settings: Settings) -> Iterator[Settings]:
    """In demo mode, start the simulated API and point the settings at it."""
    if not settings.demo:
        yield settings
        return
    simulator = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, LiveDataset()).start()
    log.info("demo mode: simulated API", extra={"fields": {"url": simulator.url}})
    try:
        yield settings.model_copy(
            update={
                "api_url": simulator.url,
                "public_key": DEMO_PUBLIC_KEY,
                "private_key": SecretStr(DEMO_PRIVATE_KEY),
            }
        )
    finally:
        simulator.stop()


def _client(settings: Settings) -> ApiClient:
    options = ClientOptions(
        page_size=settings.page_size,
        max_pages=settings.max_pages,
        parallel_pages=settings.parallel_pages,
        request_timeout=settings.request_timeout_seconds,
        max_retries=settings.max_retries,
        max_response_bytes=settings.max_response_bytes,
        max_collection_bytes=settings.max_collection_bytes,
        ca_bundle=settings.ca_bundle,
    )
    return ApiClient(settings.api_url, settings.public_key, settings.private_key, options=options)


def _collector(settings: Settings, client: ApiClient) -> PrefetchCollector:
    limits = SummaryLimits(
        max_url_series=settings.max_url_series,
        max_task_series=settings.max_task_series,
        buckets=tuple(settings.histogram_buckets),
    )
    return PrefetchCollector(
        client,
        settings.targets,
        lookback_seconds=settings.lookback_seconds,
        limits=limits,
        cache_seconds=settings.cache_seconds,
        default_timeout=settings.max_scrape_timeout_seconds,
    )


def _runtime_registry() -> CollectorRegistry:
    """The process, platform and GC metrics every client library exporter carries."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve(settings: Settings, collector: PrefetchCollector, web_config: Any) -> int:
    """Serve until SIGTERM or SIGINT."""
    host, port = settings.listen_host_port
    timeouts = ScrapeTimeouts(
        offset=settings.scrape_timeout_offset_seconds, maximum=settings.max_scrape_timeout_seconds
    )
    app = ExporterApp(collector, runtime=_runtime_registry(), timeouts=timeouts)
    server = WebServer(app, host, port, web_config=web_config, max_requests=settings.max_requests)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.start()
    except OSError as error:
        # cheroot reports a failed bind as a bare OSError whose text carries the cause
        print(f"{PROG}: cannot listen on {settings.listen_address}: {error}", file=sys.stderr)
        return 2
    log.info(
        "started",
        extra={
            "fields": {
                "version": __version__,
                "address": server.url,
                "api_url": settings.api_url,
                "targets": ",".join(f"{t.project_label}/{t.platform}" for t in settings.targets),
            }
        },
    )
    _settle_garbage_collector()
    server.serve_forever()
    return 0


def _settle_garbage_collector() -> None:
    """Spare each scrape the cycle collector's passes over data that has no cycles.

    The answers' structs are outside the collector's sight, but a scrape of 100,000 URLs
    still allocates enough lists (the pages' columns, the URL lists) to run it about 7
    times at CPython's default threshold of 700, each time walking the young lists and
    every object loaded at start-up: 11 to 17 ms a scrape. Freezing the start-up objects
    and collecting every 10,000 allocations leaves no collection in a scrape (see
    benchmarks/); the garbage cycles it still has to find are few and small.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


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
            reachable, tasks = f"no ({error.reason}: {error.detail})", "-"
        elapsed = f"{time.monotonic() - started:.2f}s"
        rows.append((f"{target.project_label}/{target.platform}", reachable, tasks, elapsed))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 1 if failures else 0


def collect_once(settings: Settings, collector: PrefetchCollector, output: Path | None) -> int:
    """Collect every target once; write the text exposition; 0 when every target was up."""
    metrics = collector.collect_within(Deadline.after(settings.max_scrape_timeout_seconds))
    text = generate_latest(MetricsSnapshot(metrics))
    if output is None:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    else:
        _write_atomically(output, text)
    up = [sample.value for m in metrics if m.name == "ucdn_prefetch_up" for sample in m.samples]
    return 0 if up and all(value == 1 for value in up) else 1


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
