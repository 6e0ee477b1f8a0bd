"""A real Prometheus (Debian's ``prometheus`` package) for the tests that need one: started
on a free loopback port with a configuration the test writes, and asked through its HTTP API.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml
from conftest import free_port, installed


@dataclass
class Prometheus:
    """A running Prometheus: its base URL and the file its log goes to."""

    url: str
    log_path: Path

    def api(self, path: str, **params: Any) -> Any:
        """The data of a successful API answer; a query error fails with its message."""
        response = requests.get(f"{self.url}api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def query_range(self, expr: str, seconds: float = 60) -> list[dict[str, Any]]:
        now = time.time()
        data = self.api("query_range", query=expr, start=now - seconds, end=now, step="2s")
        result: list[dict[str, Any]] = data["result"]
        return result


def run_prometheus(
    directory: Path, config: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], Prometheus]:
    """Prometheus with ``config``, its data and log in ``directory``; the caller stops it."""
    binary = installed("prometheus")
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    return process, Prometheus(f"http://127.0.0.1:{port}/", log_path)


def wait_for(what: str, check: Callable[[], bool], prometheus: Prometheus, end: float) -> None:
    """Ask ``check`` until it holds or ``end`` (monotonic) passes; then fail with the log."""
    while time.monotonic() < end:
        try:
            if check():
                return
        except (requests.RequestException, AssertionError):
            pass  # not up yet, or not answering yet: ask again until the deadline
        time.sleep(0.5)
    raise AssertionError(f"{what} not within the deadline:\n{prometheus.log_path.read_text()}")
