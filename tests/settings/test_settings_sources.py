"""Settings: sources and precedence, and one clear line for every bad value."""

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from exporter.settings.address import parse_listen_address
from exporter.settings.config import Settings, key_sources, load_settings
from exporter.settings.names import ConfigError, env_name, flag_name
from exporter.settings.target import Target

REPO = Path(__file__).resolve().parents[2]

CANARY = "canary-private-5c1e0a77"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("UCDN_EXPORTER_", "UCLOUD_")):
            monkeypatch.delenv(name)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCDN_EXPORTER_PUBLIC_KEY", "pub")
    monkeypatch.setenv("UCDN_EXPORTER_PRIVATE_KEY", "priv")
    settings = load_settings()
    assert settings.api_url == "https://api.an-link.com/"
    assert settings.targets == [Target("", "cdn")]
    assert settings.targets[0].project_label == "default"
    assert (settings.lookback_seconds, settings.page_size) == (86400, 100)
    assert (settings.max_url_series, settings.max_task_series) == (1000, 100)
    assert (settings.cache_seconds, settings.request_timeout_seconds) == (0, 10)
    assert settings.listen_host_port == ("0.0.0.0", 9866)
    assert settings.log_level == "info"


def test_ucloud_key_names_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCLOUD_PUBLIC_KEY", "pub")
    monkeypatch.setenv("UCLOUD_PRIVATE_KEY", "priv")
    monkeypatch.setenv("UCDN_EXPORTER_PROJECT_IDS", "org-a, org-b,org-a")
    monkeypatch.setenv("UCDN_EXPORTER_PLATFORMS", "dcdn,cdn")
    settings = load_settings()
    assert settings.public_key == "pub"
    assert settings.private_key.get_secret_value() == "priv"
    assert settings.targets == [
        Target("org-a", "dcdn"),
        Target("org-a", "cdn"),
        Target("org-b", "dcdn"),
        Target("org-b", "cdn"),
    ]


def test_flags_win_over_environment_which_wins_over_secret_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "UCDN_EXPORTER_PRIVATE_KEY").write_text("from-file\n")
    (tmp_path / "UCDN_EXPORTER_PUBLIC_KEY").write_text("pub-from-file")
    settings = load_settings(secrets_dir=tmp_path)
    assert settings.private_key.get_secret_value() == "from-file"
    monkeypatch.setenv("UCDN_EXPORTER_PRIVATE_KEY", "from-env")
    assert load_settings(secrets_dir=tmp_path).private_key.get_secret_value() == "from-env"
    flagged = load_settings({"private_key": "from-flag"}, secrets_dir=tmp_path)
    assert flagged.private_key.get_secret_value() == "from-flag"
    assert flagged.public_key == "pub-from-file"


def test_demo_needs_no_keys() -> None:
    assert load_settings({"demo": True}).demo is True
    with pytest.raises(ConfigError, match="PUBLIC_KEY"):
        load_settings()


def test_demo_takes_keys_from_every_source_without_complaint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The demo ignores them (the command line logs which, tests/test_cli_modes.py).
    monkeypatch.setenv("UCLOUD_PUBLIC_KEY", "pub")
    (tmp_path / "UCDN_EXPORTER_PRIVATE_KEY").write_text(CANARY)
    assert load_settings({"demo": True}, secrets_dir=tmp_path).demo is True
    assert load_settings({"demo": True, "private_key": CANARY}).demo is True


def test_key_sources_name_each_flag_variable_and_file_never_a_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert key_sources({"demo": True}, secrets_dir=tmp_path) == {}
    monkeypatch.setenv("UCLOUD_PUBLIC_KEY", "pub")
    monkeypatch.setenv("ucloud_private_key", CANARY)  # read whatever its case
    monkeypatch.setenv("UCDN_EXPORTER_PUBLIC_KEY", "")  # empty: not given
    for name in ("UCDN_EXPORTER_PRIVATE_KEY", "UCLOUD_PUBLIC_KEY"):
        (tmp_path / name).write_text(CANARY)
    assert key_sources({"private_key": CANARY, "public_key": ""}, secrets_dir=tmp_path) == {
        "flags": ["--private-key"],
        "variables": ["UCLOUD_PUBLIC_KEY", "UCLOUD_PRIVATE_KEY"],
        "secrets_files": ["UCLOUD_PUBLIC_KEY", "UCDN_EXPORTER_PRIVATE_KEY"],
    }


def test_the_keys_are_read_only_under_their_documented_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bare PRIVATE_KEY in a container's environment belongs to something else.
    monkeypatch.setenv("PUBLIC_KEY", "pub")
    monkeypatch.setenv("PRIVATE_KEY", CANARY)
    with pytest.raises(ConfigError, match="UCDN_EXPORTER_PUBLIC_KEY"):
        load_settings()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"page_size": "many"}, "UCDN_EXPORTER_PAGE_SIZE (--page-size)"),
        ({"page_size": "0"}, "UCDN_EXPORTER_PAGE_SIZE"),
        ({"platforms": "cdn,edge"}, "UCDN_EXPORTER_PLATFORMS"),
        ({"listen_address": "localhost"}, "UCDN_EXPORTER_LISTEN_ADDRESS"),
        ({"listen_address": ":70000"}, "UCDN_EXPORTER_LISTEN_ADDRESS"),
        ({"api_url": "ftp://x"}, "UCDN_EXPORTER_API_URL"),
        ({"histogram_buckets": "60,10"}, "UCDN_EXPORTER_HISTOGRAM_BUCKETS"),
        ({"log_level": "loud"}, "UCDN_EXPORTER_LOG_LEVEL"),
        ({"cache_seconds": "-1"}, "UCDN_EXPORTER_CACHE_SECONDS"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"public_key": "pub", "private_key": CANARY, **overrides})
    message = str(caught.value)
    assert named in message
    assert "\n" not in message
    assert CANARY not in message


def test_listen_address_forms() -> None:
    assert parse_listen_address(":9866") == ("0.0.0.0", 9866)
    assert parse_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen_address("[::1]:9866") == ("::1", 9866)


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("UCDN_", "UCLOUD_"))}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


@pytest.mark.e2e
def test_invalid_setting_exits_2_with_one_line_and_no_secret() -> None:
    result = run_cli(
        "--page-size",
        "lots",
        env={"UCDN_EXPORTER_PUBLIC_KEY": "pub", "UCDN_EXPORTER_PRIVATE_KEY": CANARY},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "UCDN_EXPORTER_PAGE_SIZE (--page-size)" in lines[0]
    assert "Traceback" not in result.stderr
    assert CANARY not in result.stderr + result.stdout


@pytest.mark.e2e
def test_missing_keys_exit_2() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "PUBLIC_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.e2e
def test_help_lists_every_setting_with_its_variable() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in text
        assert "UCDN_EXPORTER_" + name.upper() in text
    assert "--web.config.file" in text
    assert "default 86400" in text


@pytest.mark.e2e
def test_version_comes_from_package_metadata() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ucdn-prefetch-exporter {version('ucdn-prefetch-exporter')}"


@pytest.mark.e2e
def test_a_mistyped_flag_is_one_line_that_does_not_echo_the_key() -> None:
    result = run_cli("--private-kye", CANARY)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ucdn-prefetch-exporter: unrecognized arguments: --private-kye (see --help)"
    ]
    result = run_cli(f"--private-kye={CANARY}")
    assert result.returncode == 2
    assert CANARY not in result.stderr + result.stdout


def readme_rows() -> dict[str, list[str]]:
    return {
        line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:4]]
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("| `UCDN_EXPORTER_")
    }


def test_the_readme_lists_every_setting_with_its_flag_and_default() -> None:
    rows = readme_rows()
    documented = list(Settings.model_fields)
    assert set(rows) == {env_name(name) for name in documented}
    for name in documented:
        field = Settings.model_fields[name]
        flag, default = rows[env_name(name)]
        assert flag == f"`{flag_name(name)}`"
        value = field.get_default(call_default_factory=True)
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert default == f"`{value}`", name
