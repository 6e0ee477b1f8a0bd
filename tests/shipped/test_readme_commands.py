"""The README's first two commands, the contract with a newcomer: one installs and runs the
demo, one installs and runs the tests, each in a virtual environment of its own, so that
they work on a stock Debian or Ubuntu Python (which refuses a bare ``pip install``).
"""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port
from exposition import samples

ROOT = Path(__file__).resolve().parents[2]
DEMO = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/ucdn-prefetch-exporter --demo"
TESTS = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def readme_commands() -> list[str]:
    """The ``sh`` blocks of the README, in order."""
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_the_first_two_commands_install_into_a_virtual_environment() -> None:
    assert readme_commands()[:2] == [DEMO, TESTS]


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TESTS in lines


@pytest.mark.system
def test_the_demo_command_serves_metrics_from_a_fresh_checkout(tmp_path: Path) -> None:
    """The first command as written, in a copy of the tracked files (a fresh clone's)."""
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (checkout / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / os.fsdecode(name))
    port = free_port()
    # The command stays word for word; the port comes from the environment, as a user's would.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UCDN_EXPORTER_", "UCLOUD_", "PYTHON"))
    }
    environment["UCDN_EXPORTER_LISTEN_ADDRESS"] = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        ["sh", "-c", DEMO],
        cwd=checkout,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        body = _wait_for_metrics(port, process, seconds=300)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    up = {
        labels: found
        for (name, labels), found in samples(body).items()
        if name == "ucdn_prefetch_up"
    }
    assert up, "no ucdn_prefetch_up series"
    assert set(up.values()) == {1.0}, up


def _wait_for_metrics(port: int, process: subprocess.Popen[bytes], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"the demo command exited with {process.returncode}: {stderr[-2000:]}")
        try:
            answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        except requests.ConnectionError:
            time.sleep(0.5)
            continue
        assert answer.status_code == 200
        return answer.text
    pytest.fail(f"the demo did not answer on port {port} within {seconds} s")
