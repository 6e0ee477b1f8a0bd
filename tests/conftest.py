"""Shared test equipment: a simulated API on loopback and the exporter as a real process."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from simfaults import SimulatedApi

from exporter.simulator import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, StaticDataset
from exporter.webserver import WebServer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def installed(program: str) -> str:
    """Path of a program from Debian's ``prometheus`` package (promtool, prometheus).

    Missing, it fails the test in CI (``CI=true``, where .ci/run installs it) and skips
    it elsewhere, so a newcomer without the package still runs everything else.
    """
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is not installed (apt-get install prometheus)")
        pytest.skip(f"{program} is not installed (apt-get install prometheus)")
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
    """A port nothing listens on right now (the OS picks it)."""
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


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class ExporterProcess:
    """The exporter running as a process; its output is kept for inspection."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def scrape(
        self, path: str = "metrics", timeout: float = 30.0, **headers: str
    ) -> requests.Response:
        return requests.get(self.url + path, headers=headers, timeout=timeout)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = self.scrape()
        response.raise_for_status()
        return samples(response.text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def wait_until_ready(exporter: ExporterProcess, timeout: float = 20.0) -> None:
    """Wait for /-/ready, failing early with the exporter's log if it exits."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if exporter.process.poll() is not None:
            raise AssertionError(
                f"exporter exited {exporter.process.returncode}:\n{exporter.log()}"
            )
        try:
            if requests.get(exporter.url + "-/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"exporter not ready within {timeout}s:\n{exporter.log()}")


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    """Start ``python -m exporter`` with the given flags on a free port; stop it afterwards."""
    started: list[ExporterProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> ExporterProcess:
        port = free_port()
        log_path = tmp_path / f"exporter-{len(started)}.log"
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("UCDN_", "UCLOUD_"))
        }
        environment.update(env or {})
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=REPO,
            )
        exporter = ExporterProcess(process, port, log_path, environment)
        started.append(exporter)
        if wait:
            wait_until_ready(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatedApi]]:
    """Start simulated APIs over static datasets (demo keys); stop them afterwards."""
    started: list[SimulatedApi] = []

    def start(dataset: StaticDataset | None = None) -> SimulatedApi:
        api = SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset or StaticDataset({})).start()
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
