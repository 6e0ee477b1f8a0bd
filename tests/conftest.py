"""Shared test equipment: a simulated API on loopback, the exporter as a real process, and the
tiers: hypothesis profiles and the slow tests that leave the fast lane.
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import Exporter
from hostile import Behaviour, HostileGateway
from hypothesis import settings
from simfaults import SimulatedApi

from exporter.simulator.account import Project
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.static import StaticDataset
from exporter.web.server import WebServer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"

# Every server of the suite is on loopback: a proxy in the developer's environment must not
# carry the calls of the exporter (which honours the proxy variables) or of the tests.
# gateway/test_proxies.py sets its own.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

# Nor may the developer's own UCloud profile files (~/.ucloud) give the exporters of the
# suite their keys or projects: the home directory is an empty one of the suite's own.
# The profile tests set their own.
os.environ["HOME"] = tempfile.mkdtemp(prefix="ucdn-tests-home-")

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: "fast" (the default, so a bare pytest
# stays quick) gives a property test without examples of its own FAST_EXAMPLES, and one
# that asks for more takes them through examples(); "full" (make test, CI) runs each with
# the examples its own @settings asks for. The examples stay derandomized in both, so a
# failure found in CI is found again by the same command.
FAST_EXAMPLES = 25
settings.register_profile("fast", max_examples=FAST_EXAMPLES, derandomize=True)
settings.register_profile("full", derandomize=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")
settings.load_profile(PROFILE)


def examples(full: int, fast: int = 200) -> int:
    """The examples a property that asks for ``full`` runs in the current profile.

    A test's own ``max_examples`` outranks any profile, so a property that wants more than
    the fast profile's default asks through here: all of ``full`` in the full profile, at
    most ``fast`` in the fast lane.
    """
    return full if PROFILE == "full" else min(full, fast)


def installed(program: str, package: str = "prometheus") -> str:
    """Path of a program from a Debian package (promtool and prometheus from ``prometheus``,
    ``tinyproxy``).

    Missing, it fails the test in CI (``CI=true``, where .ci/run installs it) and skips
    it elsewhere, so a newcomer without the package still runs everything else.
    """
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is not installed (apt-get install {package})")
        pytest.skip(f"{program} is not installed (apt-get install {package})")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool (see :func:`installed`) with ``args``; its output is captured as text."""
    return subprocess.run(
        [installed("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ten seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it), for a program that cannot
    bind port 0 and say which port it got (Prometheus); the exporter can (faultkit)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def url_entry(
    name: str, status: str, created: int = 1000, finish: int = 0, progress: int = 0
) -> dict[str, Any]:
    """One URL of a task as the API writes it (``UrlProgressInfo``)."""
    return {
        "Url": name,
        "Status": status,
        "CreateTime": created,
        "FinishTime": finish,
        "Progress": progress,
    }


@pytest.fixture
def start_exporter() -> Iterator[Callable[..., Exporter]]:
    """Start ``python -m exporter`` with the given flags (:class:`faultkit.Exporter`, on port
    0); unless ``wait=False``, wait for its ``started`` line. Every one is stopped afterwards."""
    started: list[Exporter] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Exporter:
        exporter = Exporter(args, env=env)
        started.append(exporter)
        return exporter.wait_started() if wait else exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatedApi]]:
    """Start simulated APIs over static datasets (demo keys); stop them afterwards.

    ``projects`` declares the account's projects (else it is open: see
    :mod:`exporter.simulator.account`); ``rate_limit`` as for :class:`SimulatedApi`.
    """
    started: list[SimulatedApi] = []

    def start(
        dataset: StaticDataset | None = None,
        *,
        projects: Iterable[Project] | None = None,
        rate_limit: int | None = None,
    ) -> SimulatedApi:
        api = SimulatedApi(
            DEMO_PUBLIC_KEY,
            DEMO_PRIVATE_KEY,
            dataset or StaticDataset({}),
            projects=projects,
            rate_limit=rate_limit,
        ).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def exporter_args(api: SimulatedApi, *extra: str) -> list[str]:
    """Flags that point the exporter at a simulator with the demo keys."""
    return [
        "--api-url",
        api.url,
        "--public-key",
        DEMO_PUBLIC_KEY,
        "--private-key",
        DEMO_PRIVATE_KEY,
        *extra,
    ]


@pytest.fixture
def serve() -> Iterator[list[WebServer]]:
    """Web servers a test starts with :func:`started`; each is stopped afterwards."""
    servers: list[WebServer] = []
    yield servers
    for server in servers:
        server.stop()


def started(servers: list[WebServer], server: WebServer) -> WebServer:
    """Start ``server`` and hand it to the :func:`serve` fixture to stop."""
    servers.append(server)
    server.start()
    return server


@pytest.fixture
def gateways() -> Iterator[list[HostileGateway]]:
    """Hostile gateways a test starts with :func:`start_gateway`; each is stopped afterwards."""
    gateways: list[HostileGateway] = []
    yield gateways
    for gateway in gateways:
        gateway.stop()


def start_gateway(
    gateways: list[HostileGateway], behaviour: Behaviour, tls: ssl.SSLContext | None = None
) -> HostileGateway:
    """Start a gateway running ``behaviour`` (over ``tls``, if given), which
    :func:`gateways` stops."""
    gateway = HostileGateway(behaviour, tls=tls).start()
    gateways.append(gateway)
    return gateway
