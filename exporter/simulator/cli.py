"""The simulator's command line: ``python -m exporter.simulator --help``."""

import argparse
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

from exporter.simulator.hooks import FixedDelay
from exporter.simulator.live import LiveDataset
from exporter.simulator.protocol import DAY_SECONDS, DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, Dataset
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset, generate_tasks


def _listen_address(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


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
    parser.add_argument(
        "--urls-per-task",
        type=int,
        default=10,
        metavar="M",
        help="URLs per generated task (default 10)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to wait before every answer (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line."""
    args = _parser().parse_args(argv)
    dataset: Dataset
    if args.tasks is None:
        dataset = LiveDataset(args.seed)
    else:
        # An hour younger than a day, so that a day's window keeps all N for an hour.
        generated = generate_tasks(
            args.tasks,
            args.urls_per_task,
            now=int(time.time()),
            seed=args.seed,
            lookback=DAY_SECONDS - 3600,
        )
        dataset = StaticDataset({("", False): generated})
    faults = FixedDelay(max(args.delay, 0.0))
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    host, port = args.listen
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, faults=faults, host=host, port=port
    ) as api:
        print(api.url, flush=True)
        stopping.wait()
    return 0
