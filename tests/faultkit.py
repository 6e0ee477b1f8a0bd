"""The one process harness: the exporter as a real process, scraped; and the fault helpers.

The exporter runs as ``python -m exporter`` so that what is tested is what Prometheus
sees: the HTTP status, the exposition, stdout, stderr and the exit code. It listens on
port 0 and the test reads the bound address from its ``started`` log line, so tests
never race each other for ports. Every wait is bounded; :meth:`Exporter.stop`
terminates, then kills. Every test that starts the exporter uses :class:`Exporter`,
directly or through conftest's ``start_exporter`` fixture.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from exposition import Samples, samples, value
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION
from exporter.simulator.protocol import Task
from exporter.simulator.static import StaticDataset, generate_tasks

REPO = Path(__file__).resolve().parent.parent
PUBLIC_KEY = "faultkit-public"
# Distinctive enough that any occurrence in output can only be a leak.
CANARY = "canary-PRIVATE-0f9e8d7c"
NOW = int(time.time())
START_SECONDS = 10.0
STOP_SECONDS = 4.0


def simulator(tasks: Sequence[Task] | None = None, private_key: str = CANARY) -> SimulatedApi:
    """A started simulator serving ``tasks`` (default: 12 generated ones) for the default CDN."""
    listed = list(tasks) if tasks is not None else generate_tasks(12, 3, now=NOW)
    return SimulatedApi(PUBLIC_KEY, private_key, StaticDataset({("", False): listed})).start()


def closed_port() -> int:
    """A loopback port nothing listens on: bound then closed, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A loopback URL nothing listens on (see :func:`closed_port`)."""
    return f"http://127.0.0.1:{closed_port()}/"


@dataclass(frozen=True)
class Scrape:
    """One answer to GET /metrics."""

    status: int
    text: str
    seconds: float

    def samples(self) -> Samples:
        """Every sample by (name, labels); parsing fails the test if the exposition is broken."""
        return samples(self.text)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample named ``name`` whose labels include ``labels``."""
        return value(self.samples(), name, **labels)

    def up(self) -> float | None:
        """``ucdn_prefetch_up`` of the default CDN target."""
        return self.value("ucdn_prefetch_up", project_id="default", platform="cdn")

    def outcome(self, outcome: str) -> float:
        """Prefetch's ``ucdn_api_requests_total`` for one outcome (always present)."""
        value = self.value("ucdn_api_requests_total", action=PREFETCH_ACTION, outcome=outcome)
        assert value is not None, f"outcome {outcome} missing from the exposition"
        return value


class Exporter:
    """``python -m exporter`` as a child process, its output captured line by line.

    It listens on 127.0.0.1 port 0 unless ``args`` name another address. The test's own
    ``UCDN_*``/``UCLOUD_*`` variables are not inherited: only ``env`` configures it.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1:0", *args]
        full_env = {
            key: content
            for key, content in os.environ.items()
            if not key.startswith(("UCDN_", "UCLOUD_")) and key != "COVERAGE_PROCESS_START"
        }
        full_env.update(env or {})
        self._process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=REPO,
        )
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._lock = threading.Lock()
        self._started = threading.Event()
        self.url = ""
        self.killed = False  # whether SIGTERM was not enough and stop() had to SIGKILL
        self.scrapes: list[Scrape] = []
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self._process.stdout), ("stderr", self._process.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self._lines[name].append(line)
            address = _started_address(line)
            if address:
                self.url = address
                self._started.set()

    def wait_started(self, timeout: float = START_SECONDS) -> Exporter:
        """Block until the exporter logged its address; fail with its output otherwise,
        at once if it exited."""
        give_up = time.monotonic() + timeout
        while not self._started.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise AssertionError(f"exporter did not start:\n{self.log()}")
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The child process, for tests that signal it or wait for it themselves."""
        return self._process

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far, every thread, user and system (from /proc)."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime, the 14th and 15th fields of the line (counted from the pid).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict[str, float]:
        """``VmRSS`` (resident now) and ``VmHWM`` (the peak so far), in MiB (from /proc)."""
        status = Path(f"/proc/{self._process.pid}/status").read_text()
        found = {
            name: re.search(rf"^{name}:\s+(\d+) kB", status, re.MULTILINE)
            for name in ("VmRSS", "VmHWM")
        }
        return {name: int(match.group(1)) / 1024 for name, match in found.items() if match}

    @property
    def port(self) -> int:
        """The port it listens on (once started)."""
        port = urlsplit(self.url).port
        assert port is not None, f"no address logged yet:\n{self.log()}"
        return port

    def get(
        self, path: str = "metrics", timeout: float = 30.0, **headers: str
    ) -> requests.Response:
        """GET ``path`` as it is, for tests that check the HTTP answer itself."""
        return requests.get(self.url + path, headers=headers, timeout=timeout)

    def metrics(self) -> Samples:
        """Every sample of a successful GET /metrics."""
        response = self.get()
        response.raise_for_status()
        return samples(response.text)

    def scrape(
        self, timeout_header: float | None = None, path: str = "metrics", wait: float = 12.0
    ) -> Scrape:
        """GET /metrics (with Prometheus' timeout header when given); ``wait`` bounds the test."""
        headers = {}
        if timeout_header is not None:
            headers["X-Prometheus-Scrape-Timeout-Seconds"] = str(timeout_header)
        started = time.monotonic()
        response = requests.get(self.url + path, headers=headers, timeout=wait)
        scrape = Scrape(response.status_code, response.text, time.monotonic() - started)
        with self._lock:
            self.scrapes.append(scrape)
        return scrape

    def stop(self, *, to_main_thread: bool = True) -> int:
        """Terminate (then kill), wait for the output to drain; return the exit code.

        SIGTERM goes to the main thread by default: sent to the process, the kernel may
        deliver it to a worker thread, and the exporter then misses it while its main
        thread blocks (a known bug, tested on its own in test_concurrency.py). Aiming it
        keeps every test from paying the kill timeout.
        """
        if self._process.poll() is None:
            if to_main_thread:
                _terminate_main_thread(self._process)
            else:
                self._process.terminate()
            try:
                self._process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.killed = True
                self._process.kill()
                self._process.wait(STOP_SECONDS)
        for reader in self._readers:
            reader.join(STOP_SECONDS)
        return self._process.returncode

    def wait_exit(self, timeout: float = START_SECONDS) -> int:
        """For runs expected to end by themselves (bad settings): the exit code."""
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("exporter did not exit") from None
        return self.stop()

    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self._lines["stdout"])

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self._lines["stderr"])

    def log(self) -> str:
        """Everything it wrote: stdout, then stderr (where its log records go)."""
        return "\n".join(text for text in (self.stdout, self.stderr) if text)

    def log_records(self) -> list[dict[str, str]]:
        """stderr parsed as logfmt or JSON lines; lines in neither format are kept as ``raw``."""
        return [_parse_log_line(line) for line in self.stderr.splitlines() if line.strip()]

    def failures(self, at_least: int = 0, within: float = 5.0) -> list[dict[str, str]]:
        """The ``collection failed`` log records, waiting (bounded) until ``at_least`` are read:
        the lines reach us through a pipe, after the scrape's answer may have."""
        give_up = time.monotonic() + within
        while True:
            found = [r for r in self.log_records() if r.get("msg") == "collection failed"]
            if len(found) >= at_least or time.monotonic() > give_up:
                return found
            time.sleep(0.05)

    def all_output(self) -> Iterator[tuple[str, str]]:
        """(where, text) for stdout, stderr and every scrape body, for leak checks."""
        yield "stdout", self.stdout
        yield "stderr", self.stderr
        with self._lock:
            scrapes = list(self.scrapes)
        for index, scrape in enumerate(scrapes):
            yield f"scrape {index}", scrape.text


# tgkill(2) by number: Python has no wrapper for signalling another process' thread.
_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


def _terminate_main_thread(process: subprocess.Popen[bytes]) -> None:
    if _TGKILL is None or not sys.platform.startswith("linux"):
        process.terminate()
        return
    libc = ctypes.CDLL(None, use_errno=True)
    # A process' main thread has the process' id as its thread id.
    if libc.syscall(_TGKILL, process.pid, process.pid, signal.SIGTERM) != 0:
        process.terminate()


_LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def _parse_log_line(line: str) -> dict[str, str]:
    if line.startswith("{"):
        try:
            decoded = json.loads(line)
        except ValueError:
            return {"raw": line}
        return {key: str(value) for key, value in decoded.items()}
    pairs = _LOGFMT_PAIR.findall(line)
    if not pairs:
        return {"raw": line}
    return {key: json.loads(value) if value.startswith('"') else value for key, value in pairs}


def _started_address(line: str) -> str:
    record = _parse_log_line(line)
    return record.get("address", "") if record.get("msg") == "started" else ""


# For tests that count one kind's requests exactly: no refresh fetches, no quota sweeps.
PREFETCH_ONLY = ("--task-kinds", "prefetch", "--quota-interval-seconds", "0")


def exporter_args(
    api_url: str, *extra: str, private_key: str = CANARY, pipeline: bool = False
) -> list[str]:
    """The flags every fault test passes: the upstream, keys, DEBUG logs, fast retries.

    Prefetch alone unless ``pipeline``: a fault meant for one request must not be taken by
    a refresh fetch or a quota call (every action goes through the same transport, which
    these tests exercise through prefetch). Every scrape a full fetch (``--resync-seconds 0``):
    these tests count the requests and faults of scrapes that each fetch the whole window.
    """
    return [
        "--api-url",
        api_url,
        "--public-key",
        PUBLIC_KEY,
        "--private-key",
        private_key,
        "--log-level",
        "debug",
        *(() if pipeline else PREFETCH_ONLY),
        "--resync-seconds",
        "0",
        *extra,
    ]


def without_cycle_collector(folder: Path) -> dict[str, str]:
    """The environment of an exporter whose cycle collector never runs: only what reference
    counting frees is freed, as if the gc thresholds were out of reach. A
    ``sitecustomize`` module in ``folder`` turns it off as the interpreter starts."""
    (folder / "sitecustomize.py").write_text("import gc\n\ngc.disable()\n")
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def signatures(api: SimulatedApi) -> set[str]:
    """Every signature the simulator received: none may show up in any output."""
    return {
        request.params["Signature"] for request in api.requests if "Signature" in request.params
    }


def assert_no_secret(where: str, text: str, secrets: set[str]) -> None:
    """Fail naming the place and the kind of secret, never echoing a whole leaked line."""
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}...) leaked into {where}"
