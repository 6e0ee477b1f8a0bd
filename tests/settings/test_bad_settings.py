"""Bad settings, in the style of exporter-toolkit's testdata/*.bad.yml: each is run through
the real command line and must stop start-up with exit 2 and one line that names the
setting (variable and flag) and never repeats the bad value."""

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, exporter_args
from faultkit import Exporter
from simfaults import SimulatedApi

from exporter.cli import main
from exporter.settings.config import Settings
from exporter.settings.names import env_name, flag_name
from exporter.simulator.static import StaticDataset, generate_tasks

CANARY = "canary-5c1e0a77"
KEYS = ["--public-key", "pub", "--private-key", "priv"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("UCDN_EXPORTER_", "UCLOUD_")):
            monkeypatch.delenv(name)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    monkeypatch.setenv("UCDN_EXPORTER_SECRETS_DIR", str(secrets))


def refused(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run main(args); assert exit 2 and a single stderr line; return that line."""
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's own errors
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


URLS = [f"http://[::1{CANARY}", f"http://user:{CANARY}@127.0.0.1:99999/", f"http://{CANARY}:0/"]


@pytest.mark.parametrize("url", URLS, ids=["open-bracket", "port-99999", "port-0"])
def test_api_url(capsys: pytest.CaptureFixture[str], url: str) -> None:
    line = refused(capsys, [*KEYS, "--api-url", url])
    assert "UCDN_EXPORTER_API_URL (--api-url)" in line
    assert CANARY not in line


@pytest.mark.parametrize(
    "flag",
    [
        "--max-scrape-timeout-seconds",
        "--scrape-timeout-offset-seconds",
        "--cache-seconds",
        "--request-timeout-seconds",
    ],
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_floats(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    line = refused(capsys, [*KEYS, f"{flag}={value}"])
    variable = "UCDN_EXPORTER_" + flag[2:].replace("-", "_").upper()
    assert f"{variable} ({flag})" in line


SECONDS = [name for name in Settings.model_fields if name.endswith("_seconds")]
# Should a refusal fail, --check-config against a closed port returns instead of serving.
CHECK_NOTHING = ["--check-config", "--api-url", "http://127.0.0.1:9/"]


def largest(name: str) -> int | float:
    """The largest value setting ``name`` accepts."""
    [bound] = [bound.le for bound in Settings.model_fields[name].metadata if hasattr(bound, "le")]
    assert isinstance(bound, int | float)
    return bound


@pytest.mark.parametrize("name", SECONDS)
def test_every_seconds_setting_is_within_what_the_platform_can_wait(name: str) -> None:
    assert 0 < largest(name) <= threading.TIMEOUT_MAX


@pytest.mark.parametrize("value", ["1e10", "1e308"])
@pytest.mark.parametrize("name", SECONDS)
def test_a_seconds_setting_beyond_its_bound_is_refused(
    capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    line = refused(capsys, [*KEYS, *CHECK_NOTHING, f"{flag_name(name)}={value}"])
    assert f"{env_name(name)} ({flag_name(name)})" in line
    assert value not in line


@pytest.mark.parametrize("name", ["max_url_series", "max_task_series"])
def test_a_count_of_series_beyond_its_bound_is_refused(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    value = str(2**63)  # past sys.maxsize, which itertools.islice refuses
    line = refused(capsys, [*KEYS, *CHECK_NOTHING, f"{flag_name(name)}={value}"])
    assert f"{env_name(name)} ({flag_name(name)})" in line
    assert value not in line


@pytest.mark.e2e
def test_the_largest_accepted_values_serve_scrapes(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = simulator(StaticDataset({("", False): generate_tasks(12, 3, now=int(time.time()))}))
    names = [*SECONDS, "max_url_series", "max_task_series"]
    flags = [f"{flag_name(name)}={largest(name)}" for name in names]
    exporter = start_exporter(*exporter_args(api), *flags)
    # Without a timeout header the deadline is the largest the settings allow; with an
    # absurd one, it is capped there.
    for header in (None, 1e308):
        scrape = exporter.scrape(header)
        assert (scrape.status, scrape.up()) == (200, 1), exporter.log()
    assert "Traceback" not in exporter.log()


@pytest.mark.parametrize("buckets", ["10,inf", "nan", "10,nan,20", "10,1e400"])
def test_non_finite_buckets(capsys: pytest.CaptureFixture[str], buckets: str) -> None:
    line = refused(capsys, [*KEYS, "--histogram-buckets", buckets])
    assert "UCDN_EXPORTER_HISTOGRAM_BUCKETS (--histogram-buckets)" in line


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_dangling(path: Path) -> Path:
    path.symlink_to(path.parent / "nowhere")
    return path


def make_dir(path: Path) -> Path:
    path.mkdir()
    return path


def make_unreadable(path: Path) -> Path:
    path.write_text("x")
    path.chmod(0)
    return path


KINDS: dict[str, Callable[[Path], Path]] = {
    "missing": lambda path: path,
    "directory": make_dir,
    "fifo": make_fifo,
    "dangling-symlink": make_dangling,
    "unreadable": make_unreadable,
}


NOBODY = 65534


@contextlib.contextmanager
def file_modes_apply() -> Iterator[None]:
    """As root (CI runs as root), run the block as nobody, so that file modes apply."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def open_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory that nobody may enter (pytest's tmp_path is root's alone), with an empty
    secrets directory in it."""
    path = Path(tempfile.mkdtemp(prefix="bad-settings-"))
    path.chmod(0o755)
    (path / "secrets").mkdir(mode=0o755)
    monkeypatch.setenv("UCDN_EXPORTER_SECRETS_DIR", str(path / "secrets"))
    yield path
    path.chmod(0o755)
    shutil.rmtree(path)


@pytest.mark.parametrize("kind", KINDS)
def test_ca_bundle(capsys: pytest.CaptureFixture[str], open_dir: Path, kind: str) -> None:
    path = KINDS[kind](open_dir / f"ca-{CANARY}.pem")
    with file_modes_apply():
        # --check-config: should the refusal fail, main() returns instead of serving.
        line = refused(capsys, [*KEYS, "--ca-bundle", str(path), "--check-config"])
    assert "UCDN_EXPORTER_CA_BUNDLE (--ca-bundle)" in line
    assert CANARY not in line


def written(path: Path, content: bytes) -> Path:
    """``path``, once ``content`` is written to it."""
    path.write_bytes(content)
    return path


SECRET_KINDS: dict[str, Callable[[Path], Path]] = {
    **{kind: make for kind, make in KINDS.items() if kind != "missing"},
    "not-utf8": lambda path: written(path, b"\xff\xfe" + CANARY.encode()),
    "too-large": lambda path: written(path, CANARY.encode() * 10_000),
}


@pytest.mark.parametrize("kind", SECRET_KINDS)
@pytest.mark.parametrize(
    ("file_name", "setting"),
    [
        ("UCDN_EXPORTER_PRIVATE_KEY", "UCDN_EXPORTER_PRIVATE_KEY (--private-key)"),
        ("UCLOUD_PUBLIC_KEY", "UCDN_EXPORTER_PUBLIC_KEY (--public-key)"),
    ],
)
def test_secrets_files(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    open_dir: Path,
    kind: str,
    file_name: str,
    setting: str,
) -> None:
    SECRET_KINDS[kind](open_dir / "secrets" / file_name)
    with file_modes_apply():
        line = refused(capsys, ["--check-config"])
    assert setting in line and file_name in line
    assert CANARY not in line


def test_a_secrets_directory_that_cannot_be_entered(
    capsys: pytest.CaptureFixture[str], open_dir: Path
) -> None:
    open_dir.chmod(0o700)  # the directory itself can no longer even be looked at
    with file_modes_apply():
        # --check-config --demo: should the refusal fail, main() returns instead of serving.
        line = refused(capsys, ["--demo", "--check-config"])
    assert "UCDN_EXPORTER_SECRETS_DIR" in line and "permission denied" in line


def test_a_missing_secrets_directory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UCDN_EXPORTER_SECRETS_DIR", str(tmp_path / "absent"))
    line = refused(capsys, KEYS)
    assert "UCDN_EXPORTER_SECRETS_DIR" in line and "does not exist" in line


def test_a_flag_or_variable_still_wins_over_a_broken_key_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is never opened when a higher source set the key: a FIFO would hang here.
    make_fifo(Path(os.environ["UCDN_EXPORTER_SECRETS_DIR"]) / "UCDN_EXPORTER_PRIVATE_KEY")
    monkeypatch.setenv("UCLOUD_PRIVATE_KEY", "priv")
    line = refused(capsys, ["--public-key", "pub", "--page-size", "0"])
    assert "UCDN_EXPORTER_PAGE_SIZE" in line


# Each bad file, and what the one line must name: the key at fault, and the problem.
WEB_CONFIGS = {
    "cert-is-directory": (
        "tls_server_config:\n  cert_file: adir\n  key_file: adir\n",
        "tls_server_config.cert_file",
        "not a regular file",
    ),
    "header-control-character": (
        'http_server_config:\n  headers:\n    X-XSS-Protection: "1\\x01"\n',
        "http_server_config.headers",
        "X-XSS-Protection must not contain control characters",
    ),
    "header-delete": (
        'http_server_config:\n  headers:\n    X-XSS-Protection: "1\\x7f"\n',
        "http_server_config.headers",
        "X-XSS-Protection must not contain control characters",
    ),
    "header-nul": (
        'http_server_config:\n  headers:\n    Content-Security-Policy: "a\\0b"\n',
        "http_server_config.headers",
        "Content-Security-Policy must not contain control characters",
    ),
}


@pytest.mark.parametrize("name", WEB_CONFIGS)
def test_web_config(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    text, key, problem = WEB_CONFIGS[name]
    (tmp_path / "adir").mkdir()
    (tmp_path / "web.yml").write_text(text)
    line = refused(capsys, [*KEYS, "--web.config.file", str(tmp_path / "web.yml")])
    assert line.startswith(f"ucdn-prefetch-exporter: web config {tmp_path / 'web.yml'}: "), line
    assert key in line and problem in line, line


def test_max_requests_beyond_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, [*KEYS, "--max-requests", "5000"])
    assert "UCDN_EXPORTER_MAX_REQUESTS (--max-requests)" in line


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--output", "out.prom"], "needs --once"),
        (["--once", "--output", f"/nonexistent-{CANARY}/out.prom"], "does not exist"),
        (["--once", "--output", "/"], "is a directory"),
    ],
)
def test_output(capsys: pytest.CaptureFixture[str], args: list[str], problem: str) -> None:
    line = refused(capsys, ["--demo", *args])
    assert "--output" in line and problem in line
    assert CANARY not in line


def test_output_into_a_read_only_directory(
    capsys: pytest.CaptureFixture[str], open_dir: Path
) -> None:
    open_dir.chmod(0o555)
    with file_modes_apply():
        line = refused(capsys, ["--demo", "--once", "--output", str(open_dir / "out.prom")])
    assert "not writable" in line


def test_demo_refuses_an_api_url(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["--demo", "--api-url", f"https://{CANARY}.example/", "--check-config"])
    assert "UCDN_EXPORTER_API_URL (--api-url)" in line and CANARY not in line


def test_a_missing_key_names_the_variable_and_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, []) == (
        "ucdn-prefetch-exporter: invalid setting UCDN_EXPORTER_PUBLIC_KEY (--public-key): "
        "required (or run with --demo)"
    )


def test_an_unknown_platform_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, [*KEYS, "--platforms", f"cdn,{CANARY}"])
    assert "UCDN_EXPORTER_PLATFORMS (--platforms)" in line and CANARY not in line


def test_prometheus_log_spellings_are_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "out.prom"
    args = ["--demo", "--task-kinds", "prefetch", "--log.level", "warn", "--log.format", "json"]
    args += ["--once", "--output"]
    assert main([*args, str(output)]) == 0
    assert "ucdn_prefetch_up" in output.read_text()
    assert capsys.readouterr().err == ""  # warn hides the info lines


def test_help_keeps_numbers_whole_and_lists_choices_and_key_sources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "10,30,60,120,300,600,1200,1800,3600,7200,14400" in text.replace("\n", "")
    assert "10,30,60,120,300,600,1200,1800,3600,7200,14400" in text  # on one line
    flat = " ".join(text.split())
    for word in ("debug, info, warning (or warn) or error", "logfmt or json", "UCLOUD_PRIVATE_KEY"):
        assert word in flat
    assert "UCDN_EXPORTER_SECRETS_DIR" in flat and "healthcheck" in flat
    assert "--log.level" in flat and "--log.format" in flat


@pytest.mark.e2e
def test_the_largest_max_requests_really_starts(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    exporter = start_exporter(*exporter_args(simulator()), "--max-requests", "1024")
    assert exporter.get("-/healthy").status_code == 200
    assert exporter.get().status_code == 200


@pytest.mark.e2e
def test_threads_the_process_cannot_start_are_one_line_and_a_quick_exit() -> None:
    # 1 GB of address space holds the interpreter but not 1040 thread stacks of 8 MB.
    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    flags = ["--demo", "--log-level", "error", "--listen-address", "127.0.0.1:0"]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *flags, "--max-requests", "1024"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        preexec_fn=limit_address_space,
        check=False,
    )
    assert time.monotonic() - started < 30  # it used to hang, deaf to SIGTERM
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "ucdn-prefetch-exporter: invalid setting UCDN_EXPORTER_MAX_REQUESTS (--max-requests): "
        "cannot start that many web server threads (process limits)"
    ]
