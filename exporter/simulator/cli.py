"""The simulator's command line: ``python -m exporter.simulator --help``."""

import argparse
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from exporter.simulator.account import Project, numbered_projects
from exporter.simulator.hooks import FixedDelay
from exporter.simulator.live import LiveDataset
from exporter.simulator.protocol import DAY_SECONDS, DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, Dataset
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import GeneratedDataset, StaticDataset, generate_tasks


def _listen_address(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {low} or more, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve a simulated UCDN prefetch API (demo keys) until SIGTERM or SIGINT. "
        "Prints the base URL as the first line.",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to bind (default 127.0.0.1:0)",
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--tasks",
        type=int,
        metavar="N",
        help="serve N generated tasks for the default project on CDN",
    )
    data.add_argument(
        "--live",
        action="store_true",
        help="serve the moving demo world for every target (the default)",
    )
    data.add_argument(
        "--tasks-per-target",
        type=_at_least(0),
        metavar="K",
        help="serve K generated prefetch and K refresh tasks for every target of every project, "
        "each generated when first asked for (for an account at scale, with --projects)",
    )
    parser.add_argument(
        "--projects",
        type=_at_least(1),
        metavar="N",
        help="an account of N projects, org-0001 (the default project), org-0002 and so on, "
        "listed by GetProjectList; a call naming another project is refused (RetCode 292). "
        "Without it the account lists one default project and serves any project asked for",
    )
    parser.add_argument(
        "--idle-share",
        type=float,
        default=0.0,
        metavar="F",
        help="with --tasks-per-target, the share (0 to 1) of targets whose tasks are all "
        "finished (default 0)",
    )
    parser.add_argument(
        "--refuse-project-list",
        action="store_true",
        help="answer GetProjectList RetCode 299, as IAM refuses a sub-account",
    )
    parser.add_argument(
        "--rate-limit",
        type=_at_least(1),
        metavar="R",
        help="answer at most R requests in any one second, the others RetCode 153 (default: "
        "no limit)",
    )
    parser.add_argument(
        "--urls-per-task",
        type=int,
        default=10,
        metavar="M",
        help="URLs per generated task (default 10)",
    )
    latency = parser.add_mutually_exclusive_group()
    latency.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to wait before every answer (default 0)",
    )
    latency.add_argument(
        "--latency-ms",
        type=_at_least(0),
        metavar="MS",
        help="milliseconds to wait before every answer, as --delay",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line."""
    args = _parser().parse_args(argv)
    projects = None if args.projects is None else numbered_projects(args.projects)
    dataset = _dataset(args, projects)
    delay = args.delay if args.latency_ms is None else args.latency_ms / 1000
    faults = FixedDelay(max(delay, 0.0))
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    host, port = args.listen
    with SimulatedApi(
        DEMO_PUBLIC_KEY,
        DEMO_PRIVATE_KEY,
        dataset,
        faults=faults,
        host=host,
        port=port,
        projects=projects,
        rate_limit=args.rate_limit,
    ) as api:
        api.refuse_project_list = args.refuse_project_list
        print(api.url, flush=True)
        stopping.wait()
    return 0


def _dataset(args: argparse.Namespace, projects: Sequence[Project] | None) -> Dataset:
    if args.tasks_per_target is not None:
        return GeneratedDataset(
            args.tasks_per_target,
            args.urls_per_task,
            seed=args.seed,
            now=int(time.time()),
            idle_share=args.idle_share,
        )
    if args.tasks is None:
        return LiveDataset(args.seed)
    # An hour younger than a day, so that a day's window keeps all N for an hour.
    generated = generate_tasks(
        args.tasks,
        args.urls_per_task,
        now=int(time.time()),
        seed=args.seed,
        lookback=DAY_SECONDS - 3600,
    )
    # The default project's, whichever name the account gives it.
    default_key = projects[0].project_id if projects else ""
    return StaticDataset({(default_key, False): generated})
