"""The container image, checked without a Docker engine.

The Dockerfile is parsed into stages and instructions and held to the conventions
operators expect (non-root numeric user, the default port, the console script, a
health check that never scrapes). Then the image's build is replayed on this machine:
the build context that ``.dockerignore`` lets through, ``pip wheel --no-deps`` on it,
the locked dependencies (hash-checked) and the wheel installed into a fresh venv, and
the ENTRYPOINT run from that venv with the image's environment, once plainly and once
on a read-only root filesystem as the image's user.
"""

import json
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from faultkit import closed_port

from exporter.settings.address import DEFAULT_PORT

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
START_TIMEOUT_SECONDS = 60.0  # generous: two shared cores, and pydantic imports are not free


# --- a small Dockerfile parser -------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One instruction, its continuation lines joined."""

    keyword: str
    arguments: str


@dataclass
class Stage:
    """A build stage: its base image, optional name, ARG defaults and instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction, in order."""
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> str:
        """The arguments of the one ``keyword`` instruction (Docker uses the last; we want one)."""
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {found}"
        return found[0]

    def args(self) -> dict[str, str]:
        """The stage's ``ARG name=default`` values."""
        pairs = (arg.partition("=") for arg in self.all("ARG"))
        return {name: default for name, _, default in pairs}


def logical_lines(text: str) -> list[str]:
    """Join continuation lines; drop comments (Docker drops them inside continuations too)."""
    lines: list[str] = []
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        lines.append(" ".join([*pending, stripped]))
        pending = []
    assert not pending, "the Dockerfile ends inside a line continuation"
    return lines


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Return the global ARG defaults and the stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            base = string.Template(words[0]).safe_substitute(global_args)
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, not {keyword}"
            name, _, default = arguments.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return global_args, stages


def exec_form(arguments: str) -> list[str]:
    """Parse a JSON exec form (``["a", "b"]``), the only form that gets signals right."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not an exec form: {arguments}"
    assert all(isinstance(item, str) for item in value)
    return value


def key_values(arguments: str) -> dict[str, str]:
    """Parse ``KEY=value KEY2="value 2"`` as LABEL and ENV write them."""
    pairs = [word.partition("=") for word in shlex.split(arguments)]
    assert all(sep for _, sep, _ in pairs), f"not KEY=value pairs: {arguments}"
    return {key: value for key, _, value in pairs}


def healthcheck_command(arguments: str) -> list[str] | None:
    """The HEALTHCHECK's CMD (exec form), or None for ``HEALTHCHECK NONE``."""
    if arguments.strip().upper() == "NONE":
        return None
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", arguments, flags=re.DOTALL)
    assert match, f"unexpected HEALTHCHECK: {arguments}"
    return exec_form(match.group(2))


DOCKERFILE_TEXT = (ROOT / "Dockerfile").read_text(encoding="utf-8")
GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE_TEXT)
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def runtime_user() -> tuple[int, int]:
    """The final stage's numeric ``USER uid:gid``."""
    match = re.fullmatch(r"(\d+):(\d+)", RUNTIME.one("USER"))
    assert match, f"USER must be numeric uid:gid, got {RUNTIME.one('USER')!r}"
    return int(match.group(1)), int(match.group(2))


def image_venv() -> str:
    """Where the final stage puts the venv it copies from the build stage."""
    copies = [c.split() for c in RUNTIME.all("COPY") if c.startswith(f"--from={BUILD.name} ")]
    assert len(copies) == 1, f"the runtime stage should copy one thing, the venv: {copies}"
    source, destination = copies[0][1:]
    assert source == destination, "a venv only works at the path it was created at"
    return destination


# --- the Dockerfile ------------------------------------------------------------------------


def test_build_and_runtime_stages_share_one_base() -> None:
    assert len(STAGES) >= 2
    assert BUILD.name, "the build stage needs a name for COPY --from"
    # The venv's interpreter link must point at the same Python in both stages.
    assert BUILD.base == RUNTIME.base
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", RUNTIME.base), RUNTIME.base


def test_build_stage_builds_the_wheel_and_the_venv() -> None:
    runs = " && ".join(BUILD.all("RUN"))
    assert "pip wheel" in runs and "--no-deps" in runs
    assert "python -m venv" in runs and image_venv() in runs


def test_runtime_stage_gets_the_venv_and_no_build_tools() -> None:
    runs = " ".join(RUNTIME.all("RUN"))
    assert "pip" not in runs and "apt-get" not in runs
    assert image_venv() in key_values(RUNTIME.one("ENV"))["PATH"].split(":")[0]


def test_runtime_user_is_numeric_and_not_root() -> None:
    uid, gid = runtime_user()
    assert uid > 0 and gid > 0


def test_expose_is_the_exporter_default_port() -> None:
    assert RUNTIME.one("EXPOSE") in (str(DEFAULT_PORT), f"{DEFAULT_PORT}/tcp")


def test_entrypoint_is_the_console_script() -> None:
    assert exec_form(RUNTIME.one("ENTRYPOINT")) == list(PYPROJECT["project"]["scripts"])


def test_image_does_not_write_bytecode() -> None:
    assert key_values(RUNTIME.one("ENV")).get("PYTHONDONTWRITEBYTECODE") == "1"


def test_healthcheck_probes_healthy_and_never_scrapes() -> None:
    # The healthcheck mode asks /-/healthy (tests/test_healthcheck.py); here: the image runs it.
    command = healthcheck_command(RUNTIME.one("HEALTHCHECK"))
    assert command == [*PYPROJECT["project"]["scripts"], "healthcheck"]


def test_oci_labels_agree_with_pyproject() -> None:
    labels = {
        key: string.Template(value).safe_substitute(RUNTIME.args())
        for key, value in key_values(RUNTIME.one("LABEL")).items()
    }
    project = PYPROJECT["project"]
    assert labels["org.opencontainers.image.source"] == project["urls"]["Source"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]


# --- the build context ---------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate a .dockerignore pattern (Go's filepath.Match plus ``**``) to a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """(negated, pattern, regex) for each line of .dockerignore, in order."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, pattern, _pattern_regex(pattern)))
    return rules


def excluded(relative: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, _, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def build_context() -> list[str]:
    """The repository paths that ``docker build .`` would send, as relative paths."""
    rules = dockerignore_rules()
    reincluded = [pattern for negated, pattern, _ in rules if negated]
    sent: list[str] = []
    for directory, subdirectories, files in os.walk(ROOT):
        base = Path(directory).relative_to(ROOT).as_posix()
        prefix = "" if base == "." else base + "/"
        # Skip excluded folders no exception reaches into: .git, venvs, caches.
        subdirectories[:] = [
            d
            for d in subdirectories
            if not excluded(prefix + d, rules)
            or any(p.startswith(prefix + d + "/") or p == prefix + d for p in reincluded)
        ]
        sent += [prefix + f for f in files if not excluded(prefix + f, rules)]
    return sorted(sent)


def test_dockerignore_keeps_tests_git_and_caches_out() -> None:
    rules = dockerignore_rules()
    for path in (
        "tests/shipped/test_packaging.py",
        ".git/HEAD",
        ".env",
        "exporter/__pycache__/x.pyc",
    ):
        assert excluded(path, rules), path
    for path in ("pyproject.toml", "exporter/__init__.py", "exporter/cli.py", "LICENSE"):
        assert not excluded(path, rules), path


def test_build_context_holds_the_package() -> None:
    sent = build_context()
    assert "pyproject.toml" in sent and "exporter/__init__.py" in sent
    assert "requirements.lock" in sent  # the build stage installs the dependencies from it
    assert not any(path.startswith(("tests/", ".git/")) for path in sent)


# --- the image's build replayed in a venv --------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """The wheel built from the build context, installed into a fresh venv."""

    wheel: Path
    venv: Path
    env: dict[str, str]

    def entrypoint(self) -> list[str]:
        """The image's ENTRYPOINT, its program resolved in the venv."""
        program, *arguments = exec_form(RUNTIME.one("ENTRYPOINT"))
        return [str(self.venv / "bin" / program), *arguments]


def image_environment(venv: Path) -> dict[str, str]:
    """This process' environment without exporter settings, plus the image's ENV, re-rooted."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UCDN_EXPORTER_", "UCLOUD_"))
    }
    for key, value in key_values(RUNTIME.one("ENV")).items():
        rerooted = value.replace(image_venv(), str(venv))
        base[key] = string.Template(rerooted).safe_substitute(base)
    return base


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    # Not under pytest's 0700 tmp: the image's user must be able to read the venv.
    work = Path(tempfile.mkdtemp(prefix="ucdn-packaging-"))
    work.chmod(0o755)
    try:
        context = work / "context"
        for relative in build_context():
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, context / relative)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "-w", work / "wheels", context], check=True)
        (wheel,) = (work / "wheels").glob("*.whl")
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        # As the build stage does: the locked dependencies, hash-checked, then the wheel alone.
        into = [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps"]
        lock = context / "requirements.lock"
        subprocess.run([*into, "--require-hashes", "-r", str(lock)], check=True)
        subprocess.run([*into, str(wheel)], check=True)
        yield Installed(wheel=wheel, venv=venv, env=image_environment(venv))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_wheel_carries_the_license(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert any(n.endswith("/LICENSE") and ".dist-info/" in n for n in names), names
    assert b"Apache-2.0" in metadata


def test_version_prints_the_pyproject_version(installed: Installed) -> None:
    result = subprocess.run(
        [*installed.entrypoint(), "--version"],
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert PYPROJECT["project"]["version"] in result.stdout


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


def wait_until_healthy(process: "subprocess.Popen[bytes]", url: str, log: Path) -> int:
    """Poll ``url`` until it answers; fail with the exporter's output if it dies first."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            return http_status(url)
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"no answer from {url}:\n{log.read_text(errors='replace')}")


@dataclass
class Running:
    """An exporter process started in demo mode on a loopback port."""

    process: "subprocess.Popen[bytes]"
    port: int
    log: Path


@pytest.fixture
def start_demo(installed: Installed, tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start(prefix: list[str], cwd: Path) -> Running:
        port = free_port()
        log = tmp_path / f"exporter-{port}.log"
        command = [*prefix, *installed.entrypoint(), "--demo"]
        command += ["--listen-address", f"127.0.0.1:{port}"]
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, env=installed.env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
            )
        started.append(Running(process, port, log))
        return started[-1]

    yield start
    for running in started:
        running.process.terminate()
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def run_healthcheck(installed: Installed, port: int) -> int:
    """Run the image's HEALTHCHECK command as Docker would, against ``port``."""
    command = healthcheck_command(RUNTIME.one("HEALTHCHECK"))
    assert command is not None
    program = shutil.which(command[0], path=installed.env["PATH"])
    assert program and program.startswith(str(installed.venv)), program
    env = {**installed.env, "UCDN_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    result = subprocess.run(
        [program, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


def test_demo_starts_and_the_healthcheck_passes(
    installed: Installed, start_demo: Any, tmp_path: Path
) -> None:
    running = start_demo([], tmp_path)
    url = f"http://127.0.0.1:{running.port}/-/healthy"
    assert wait_until_healthy(running.process, url, running.log) == 200
    assert run_healthcheck(installed, running.port) == 0


def test_healthcheck_fails_when_nothing_listens(installed: Installed) -> None:
    assert run_healthcheck(installed, closed_port()) != 0


def read_only_root_as(uid: int, gid: int) -> list[str]:
    """A command prefix: a private mount namespace whose root is remounted read-only (what
    ``docker run --read-only`` gives), then the image's user with no capabilities."""
    script = (
        "mount -o remount,ro,bind / && exec setpriv "
        f"--reuid={uid} --regid={gid} --clear-groups --inh-caps=-all --bounding-set=-all "
        '--no-new-privs "$@"'
    )
    return ["unshare", "--mount", "--", "sh", "-c", script, "sh"]


def can_confine() -> bool:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return False
    probe = subprocess.run([*read_only_root_as(1, 1), "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not can_confine(), reason="needs root, unshare and setpriv")
def test_demo_runs_on_a_read_only_root_as_the_image_user(
    installed: Installed, start_demo: Any, tmp_path: Path
) -> None:
    uid, gid = runtime_user()
    # The venv links to the interpreter it was made from. A Python under root's 0700 home
    # (pyenv's) that needs its own libpython cannot run as the image's user here at all;
    # in the image it lives in /usr/local, readable by everyone.
    python = [str(installed.venv / "bin" / "python"), "-c", "pass"]
    runs = subprocess.run([*read_only_root_as(uid, gid), *python], capture_output=True, check=False)
    if runs.returncode != 0:
        pytest.skip(f"this interpreter cannot run as {uid}:{gid}: {runs.stderr.decode()[:120]}")
    cwd = tmp_path / "cwd"
    cwd.mkdir(mode=0o777)
    cwd.chmod(0o777)  # as a container's working directory would be, if it could be written
    running = start_demo(read_only_root_as(uid, gid), cwd)
    base = f"http://127.0.0.1:{running.port}"
    assert wait_until_healthy(running.process, f"{base}/-/healthy", running.log) == 200
    # A scrape exercises the whole path (simulator, client, collector) under the same limits.
    assert http_status(f"{base}/metrics") == 200
    assert running.process.poll() is None
    assert list(cwd.iterdir()) == []
