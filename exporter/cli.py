"""The command line: parse flags, validate settings, wire the parts together and run.

This is the only module that knows every other one. Flags are generated from the
settings model, so ``--help`` always lists every setting with its variable and default.
"""

import argparse
import contextlib
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.registry import REGISTRY
from pydantic import SecretStr

from exporter.collection.catalogue import Account, Catalogue
from exporter.collection.discovery import AccountProjects
from exporter.collection.kinds import TaskKind
from exporter.collection.quota_sweep import SWEEP_FLOOR, QuotaSweeper
from exporter.collection.sync import SyncOptions
from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.redaction import SIGNATURES
from exporter.gateway.transport import ClientOptions
from exporter.logs import configure_logging
from exporter.modes import PROG, check_config, collect_once, output_problem
from exporter.publish.collector import BackgroundOptions, UcdnCollector
from exporter.settings.config import Settings, key_sources, load_settings
from exporter.settings.names import ConfigError, env_name, flag_name
from exporter.summary.target_summary import SummaryLimits
from exporter.version import __version__
from exporter.web.app import ExporterApp, ScrapeTimeouts
from exporter.web.connections import UnsupportedCherootError
from exporter.web.server import WebServer
from exporter.web.web_config import WebConfig, WebConfigError, load_web_config

# From SIGTERM to exit, at the most, whatever any thread is doing: far below Kubernetes'
# default grace of 30 s, and above the web server's own grace (3 s) for slow readers.
SHUTDOWN_GRACE_SECONDS = 5.0
# After the server has stopped: how long threads still in a request may hold the exit.
_ABANDON_SECONDS = 1.0
_LOG_FLUSH_SECONDS = 0.5
log = logging.getLogger(__name__)
# Quota sweeps at once with background collection: their calls then share one small pool.
_BACKGROUND_SWEEPS = 2
# PROJECT_IDS=auto: the account's projects are discovered with GetProjectList.
# The exporter-toolkit's flag names, which operators already type for node_exporter.
_TOOLKIT_SPELLINGS = {
    "web_config_file": ("--web.config.file",),
    "listen_address": ("--web.listen-address",),
    "max_requests": ("--web.max-requests",),
    "log_level": ("--log.level",),
    "log_format": ("--log.format",),
}
# The groups of --help, in order, and the settings in each: every setting is in one.
_GROUPS = {
    "API": "public_key private_key api_url project_ids project_filter platforms accounts_file "
    "ca_bundle request_timeout_seconds max_retries max_api_requests_per_second",
    "collection": "task_kinds lookback_seconds resync_seconds overlap_seconds task_lookup_batch "
    "stuck_horizon_seconds quota_interval_seconds project_discovery_interval_seconds "
    "cache_seconds histogram_buckets refresh_buckets",
    "scale-out": "shard total_shards background_collection max_staleness_seconds "
    "max_collection_threads",
    "limits": "page_size max_pages parallel_pages max_response_bytes max_collection_bytes "
    "max_stored_tasks max_url_series max_task_series max_domain_series max_label_value_length "
    "max_domains quota_parallel_requests",
    "web": "listen_address web_config_file max_requests scrape_timeout_offset_seconds "
    "max_scrape_timeout_seconds",
    "logging": "log_level log_format",
    "modes": "demo",
}
# A flag's value is named by the last word of the setting's name (SECONDS, BYTES, FILE...).
_METAVARS = {"max_api_requests_per_second": "RATE", "listen_address": "[HOST]:PORT"}
_DESCRIPTION = (
    "Prometheus exporter for the prefetch (cache warm-up) and refresh (purge) tasks and the "
    "domains' daily quotas of UCloud-compatible UCDN gateways. Every setting is also an "
    "environment variable; a number's range and default follow its description."
)
_EPILOG = (
    "The API keys are also read from UCLOUD_PUBLIC_KEY and UCLOUD_PRIVATE_KEY, and from "
    "files named UCDN_EXPORTER_PUBLIC_KEY, UCDN_EXPORTER_PRIVATE_KEY, UCLOUD_PUBLIC_KEY or "
    "UCLOUD_PRIVATE_KEY in the secrets directory (UCDN_EXPORTER_SECRETS_DIR; /run/secrets "
    "when it exists), and from UCloud's profile files (~/.ucloud/config.json and "
    "credential.json; UCLOUD_PROFILE). Precedence: flag, UCDN_EXPORTER_ variable, UCLOUD_ "
    "variable, profile files, secrets file, default (docs/credentials.md). "
    f"'{PROG} healthcheck [--listen-address ADDRESS] [--web.config.file FILE]' asks the "
    "running exporter's /-/healthy on loopback and exits 0 when it answers 200, else 1. "
    "Exit status 2: an invalid setting."
)


class _Formatter(argparse.HelpFormatter):
    """Wraps at spaces only: a URL, a number or a list in a help text stays on one line."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(
            " ".join(text.split()), width, break_long_words=False, break_on_hyphens=False
        ) or [""]

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )


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
    """Flags for every setting, in groups, plus the modes that are not settings."""
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [options]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_Formatter,
        # A prefix of a flag is a mistake, not a choice: --lookback is not --lookback-seconds.
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    groups = {title: parser.add_argument_group(title) for title in _GROUPS}
    for title, names in _GROUPS.items():
        for name in names.split():
            _add_setting(groups[title], name)
    modes = groups["modes"].add_mutually_exclusive_group()
    modes.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings, call once each API action the settings will call (for "
        "every target and project), print a table with a hint for each failure and exit 0 "
        "when every call answered, else 1",
    )
    modes.add_argument(
        "--once",
        action="store_true",
        help="collect once, write the exposition to stdout (or --output) and exit",
    )
    groups["modes"].add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="with --once: write here atomically (textfile collector)",
    )
    return parser


def _add_setting(group: "argparse._ArgumentGroup", name: str) -> None:
    """The flag (and the ecosystem's spelling of it) of setting ``name``, its help ending in
    ``(RANGE, default DEFAULT; env VARIABLE)``."""
    field = Settings.model_fields[name]
    flags = [flag_name(name), *_TOOLKIT_SPELLINGS.get(name, ())]
    default = field.get_default(call_default_factory=True)
    shown = [_range(field.metadata)]
    if not isinstance(default, SecretStr | bool) and default not in ("", None, []):
        shown.append(f"default {_show(default)}")
    value = ", ".join(part for part in shown if part)
    help_text = f"{field.description} ({value + '; ' if value else ''}env {env_name(name)})"
    if field.annotation is bool:
        group.add_argument(*flags, dest=name, action="store_const", const=True, help=help_text)
    else:
        metavar = _METAVARS.get(name, name.rpartition("_")[2].upper())
        group.add_argument(*flags, dest=name, metavar=metavar, help=help_text)


def _range(metadata: list[Any]) -> str:
    """The bounds the setting's validation enforces: ``60..2678400``, ``>=64``, ``>0, <=600``."""
    bounds = {
        kind: getattr(bound, kind)
        for bound in metadata
        for kind in ("ge", "gt", "le")
        if hasattr(bound, kind)
    }
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']}..{bounds['le']}"
    signs = {"ge": ">=", "gt": ">", "le": "<="}
    return ", ".join(f"{signs[kind]}{value}" for kind, value in bounds.items())


def _show(default: Any) -> str:
    if isinstance(default, list):
        return ",".join(f"{item:g}" if isinstance(item, float) else item for item in default)
    return str(default)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; return the process' exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is not None:
        problem = output_problem(args.output) if args.once else "needs --once"
        if problem:
            parser.error(f"invalid setting --output: {problem}")
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
        settings.log_level,
        settings.log_format,
        [account.private_key.get_secret_value() for account in settings.accounts],
        signatures=SIGNATURES,
    )
    for notice in settings.notices:  # found while reading the settings, before logging was set up
        log.warning(notice.message, extra={"fields": dict(notice.fields)})
    with _upstream(settings, overrides) as settings:
        catalogue = _catalogue(settings)
        background = settings.background_collection and not args.once and not args.check_config
        collector = _collector(settings, catalogue, background=background)
        try:
            if args.check_config:
                return check_config(settings, catalogue)
            if args.once:
                return collect_once(settings, collector, args.output)
            # The first discovery, before serving: if it fails, the exporter serves all the
            # same, without that account's targets until a discovery succeeds.
            catalogue.refresh(Deadline.after(settings.max_scrape_timeout_seconds))
            collector.start()
            return serve(settings, collector, catalogue, web_config)
        finally:
            collector.close()
            for client in catalogue.clients():
                client.close()


@contextlib.contextmanager
def _upstream(settings: Settings, overrides: dict[str, Any]) -> Iterator[Settings]:
    """In demo mode, start the simulated API and point the settings at it.

    The demo signs with the simulator's keys: keys given by ``overrides`` (the flags), the
    environment or a secrets file are ignored, and one line names where they were given.
    """
    if not settings.demo:
        yield settings
        return
    ignored = key_sources(overrides)
    if ignored:
        fields = {kind: ",".join(names) for kind, names in ignored.items()}
        log.info("demo mode: ignoring the API keys given", extra={"fields": fields})
    # Imported here: the simulator (and http.server with it) is for --demo alone, and a
    # normal start should neither load it nor pay for it.
    from exporter.simulator.live import LiveDataset  # noqa: PLC0415
    from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY  # noqa: PLC0415
    from exporter.simulator.server import SimulatedApi  # noqa: PLC0415

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


def _catalogue(settings: Settings) -> Catalogue:
    """Every account with its own client (its keys and URL); its projects listed or, for
    ``auto``, discovered; narrowed to this replica's shard."""
    accounts = []
    for account in settings.accounts:
        client = _client(settings, account.api_url, account.public_key, account.private_key)
        projects = AccountProjects(
            account.name,
            client,
            account.project_ids,
            project_filter=account.project_filter,
            interval=settings.project_discovery_interval_seconds,
        )
        accounts.append(Account(projects, account.platforms, client))
    return Catalogue(
        accounts,
        shard=settings.shard,
        total_shards=settings.total_shards,
        kinds=settings.task_kinds,
        discovery_seconds=settings.max_scrape_timeout_seconds,
    )


def _client(settings: Settings, api_url: str, public_key: str, private_key: SecretStr) -> ApiClient:
    options = ClientOptions(
        page_size=settings.page_size,
        max_pages=settings.max_pages,
        parallel_pages=settings.parallel_pages,
        request_timeout=settings.request_timeout_seconds,
        max_retries=settings.max_retries,
        max_response_bytes=settings.max_response_bytes,
        max_collection_bytes=settings.max_collection_bytes,
        ca_bundle=settings.ca_bundle,
        max_requests_per_second=settings.max_api_requests_per_second,
    )
    return ApiClient(api_url, public_key, private_key, options=options)


def _collector(
    settings: Settings, catalogue: Catalogue, *, background: bool = False
) -> UcdnCollector:
    """The collector of the catalogue's targets; ``background``: a planner collects them
    (``--once`` and ``--check-config`` collect as a scrape does)."""
    buckets = {"prefetch": settings.histogram_buckets, "refresh": settings.refresh_buckets}
    kinds = [
        TaskKind.named(
            name,
            SummaryLimits(
                max_url_series=settings.max_url_series,
                max_task_series=settings.max_task_series,
                buckets=tuple(buckets[name]),
                max_label_value_length=settings.max_label_value_length,
                max_domain_series=settings.max_domain_series,
            ),
        )
        for name in settings.task_kinds
    ]
    return UcdnCollector(
        catalogue,
        kinds=kinds,
        sync=SyncOptions(
            lookback_seconds=settings.lookback_seconds,
            resync_seconds=settings.resync_seconds,
            overlap_seconds=settings.overlap_seconds,
            lookup_batch=settings.task_lookup_batch,
            stuck_horizon_seconds=settings.stuck_horizon_seconds,
            max_stored_tasks=settings.max_stored_tasks,
        ),
        cache_seconds=settings.cache_seconds,
        default_timeout=settings.max_scrape_timeout_seconds,
        extra=[_quota_sweeper(settings, catalogue, background=background)],
        background=BackgroundOptions(
            max_staleness=settings.max_staleness_seconds,
            max_threads=settings.max_collection_threads,
            collection_seconds=settings.max_scrape_timeout_seconds,
            budget_share=1 - SWEEP_FLOOR if settings.quota_interval_seconds else 1.0,
        )
        if background
        else None,
    )


def _quota_sweeper(
    settings: Settings, catalogue: Catalogue, *, background: bool = False
) -> QuotaSweeper:
    """The sweeper of the catalogue's projects (the collector tells it when they change);
    in the background, a few sweeps at a time, started by the planner."""
    entries = catalogue.current()
    return QuotaSweeper(
        catalogue.clients()[0],
        sorted({entry.target.project_id for entry in entries}),
        interval=settings.quota_interval_seconds,
        max_domains=settings.max_domains,
        max_parallel=settings.quota_parallel_requests,
        max_label_value_length=settings.max_label_value_length,
        max_sweeps=_BACKGROUND_SWEEPS if background else 0,
    )


def serve(
    settings: Settings,
    collector: UcdnCollector,
    catalogue: Catalogue,
    web_config: WebConfig | None,
) -> int:
    """Serve until SIGTERM or SIGINT, then exit within :data:`SHUTDOWN_GRACE_SECONDS`;
    SIGHUP is logged and ignored."""
    host, port = settings.listen_host_port
    timeouts = ScrapeTimeouts(
        offset=settings.scrape_timeout_offset_seconds, maximum=settings.max_scrape_timeout_seconds
    )
    # The client library's default registry holds what every Python exporter carries: the
    # process, platform and GC collectors, and nothing else (no metric of ours is in it).
    app = ExporterApp(collector, runtime=REGISTRY, timeouts=timeouts)
    try:
        server = WebServer(
            app, host, port, web_config=web_config, max_requests=settings.max_requests
        )
    except UnsupportedCherootError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():  # a second signal while the first one's stop runs
            return
        stopping.set()
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        last_resort = _exit_after(SHUTDOWN_GRACE_SECONDS)
        # Scrapes waiting on the gateway answer at once (up 0), so that the web server's
        # threads are free to end; then no request of ours is left on the wire.
        collector.close()
        for client in catalogue.clients():
            client.close()
        server.stop()
        # Every answer anyone reads has been sent: a thread still in a request to the
        # gateway now only holds up the exit, so it gets a moment rather than the grace.
        last_resort.cancel()
        _exit_after(_ABANDON_SECONDS)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # SIGHUP's default action ends the process, mid-scrape; and there is nothing to reload.
    signal.signal(signal.SIGHUP, _ignore_hangup)
    try:
        server.start()
    except OSError as error:
        # cheroot reports a failed bind as a bare OSError whose text carries the cause
        print(f"{PROG}: cannot listen on {settings.listen_address}: {error}", file=sys.stderr)
        return 2
    except RuntimeError:
        # threading's "can't start new thread" (process limits below max_requests). The
        # workers already started wait on a queue cheroot does not track yet, and would
        # keep the interpreter from exiting (and from SIGTERM) for ever: leave at once.
        print(
            f"{PROG}: invalid setting {env_name('max_requests')} ({flag_name('max_requests')}): "
            "cannot start that many web server threads (process limits)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)
    log.info(
        "started",
        extra={
            "fields": {
                "version": __version__,
                "address": server.url,
                "api_url": _without_credentials(settings.api_url),
                "targets": ",".join(
                    f"{e.target.project_label}/{e.target.platform}" for e in catalogue.current()
                ),
            }
        },
    )
    server.serve_forever()
    return 0


def _ignore_hangup(signum: int, frame: FrameType | None) -> None:
    log.warning(
        "SIGHUP ignored: the exporter reads its settings at start only; restart it to apply "
        "new ones"
    )


def _without_credentials(url: str) -> str:
    """The URL to log: a user name and password in it stay out of the logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="<redacted>@" + parts.netloc.rpartition("@")[2]))


def _exit_after(seconds: float) -> threading.Timer:
    """The last resort: exit with status 0 after ``seconds``, whatever is still running.

    Threads in a request to the gateway cannot be interrupted from Python, and the
    interpreter joins the fetch and page pools' threads at exit: a gateway that drips or
    never answers would otherwise hold the process until the request's own timeouts end
    it (up to the scrape cap plus a request timeout), past Kubernetes' grace period and
    into a SIGKILL. Status 0, because the stop was asked for and nothing is lost: the
    abandoned work is a scrape that nobody will read.
    """

    def exit_now() -> None:
        stuck = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.warning(
            "exiting with threads still running",
            extra={"fields": {"after_seconds": seconds, "threads": ",".join(stuck)}},
        )
        # os._exit skips flushing the log; a flush blocked on a full pipe must not block it.
        flusher = threading.Thread(target=logging.shutdown, name="log-flush", daemon=True)
        flusher.start()
        flusher.join(_LOG_FLUSH_SECONDS)
        os._exit(0)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.name = "shutdown-watchdog"
    timer.start()
    return timer
