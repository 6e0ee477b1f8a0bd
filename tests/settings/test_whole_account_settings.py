"""Settings of the whole account: discovered projects, their filter, shards, and the account
the top-level settings make."""

import os
import re

import pytest
from pydantic import SecretStr

from exporter.settings.accounts import AccountSettings
from exporter.settings.config import load_settings
from exporter.settings.names import ConfigError
from exporter.settings.target import Target

KEYS = {"public_key": "pub", "private_key": "canary-private-77e1"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in list(os.environ):
        if name.startswith(("UCDN_EXPORTER_", "UCLOUD_")):
            monkeypatch.delenv(name)
    # No profile of the machine running the tests: its files are not ours to read.
    monkeypatch.setenv("HOME", str(tmp_path))


def refusal(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings({**KEYS, **overrides})
    message = str(caught.value)
    assert "\n" not in message and KEYS["private_key"] not in message
    return message


def test_the_defaults_discover_nothing_and_take_every_target() -> None:
    settings = load_settings(KEYS)
    assert (settings.shard, settings.total_shards) == (0, 1)
    assert settings.project_discovery_interval_seconds == 3600
    assert (settings.project_filter, settings.accounts_file) == ("", None)
    assert settings.discovers_projects is False
    assert settings.accounts == (
        AccountSettings(
            name="default",
            public_key="pub",
            private_key=SecretStr(KEYS["private_key"]),
            api_url="https://api.an-link.com/",
            project_ids=("",),
            project_filter=None,
            platforms=("cdn",),
        ),
    )


def test_auto_discovers_the_projects_with_a_compiled_filter() -> None:
    settings = load_settings(
        {**KEYS, "project_ids": "auto", "project_filter": "^prod-", "platforms": "cdn,dcdn"}
    )
    assert settings.discovers_projects is True
    assert settings.targets == []
    (account,) = settings.accounts
    assert account.project_ids is None
    assert account.project_filter == re.compile("^prod-")
    assert account.platforms == ("cdn", "dcdn")


def test_listed_projects_keep_their_targets() -> None:
    settings = load_settings({**KEYS, "project_ids": "org-b,org-a,org-b"})
    assert settings.accounts[0].project_ids == ("org-b", "org-a")
    assert settings.targets == [Target("org-b", "cdn"), Target("org-a", "cdn")]


@pytest.mark.parametrize("value", ["auto,org-a", "org-a, auto"])
def test_auto_is_alone(value: str) -> None:
    message = refusal(project_ids=value)
    assert message.startswith("invalid setting UCDN_EXPORTER_PROJECT_IDS (--project-ids): ")
    assert "'auto'" in message


def test_a_filter_that_does_not_compile_is_one_line_naming_it() -> None:
    message = refusal(project_ids="auto", project_filter="prod-(")
    assert message.startswith("invalid setting UCDN_EXPORTER_PROJECT_FILTER (--project-filter)")
    assert "not a regular expression" in message and "prod-(" not in message


def test_a_filter_without_discovery_is_refused() -> None:
    message = refusal(project_ids="org-a", project_filter="^org")
    assert message.startswith("invalid setting UCDN_EXPORTER_PROJECT_FILTER")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"project_discovery_interval_seconds": "4"}, "PROJECT_DISCOVERY_INTERVAL_SECONDS"),
        ({"project_discovery_interval_seconds": "86401"}, "PROJECT_DISCOVERY_INTERVAL_SECONDS"),
        ({"shard": "-1"}, "SHARD (--shard)"),
        ({"total_shards": "0"}, "TOTAL_SHARDS (--total-shards)"),
        ({"total_shards": "1001"}, "TOTAL_SHARDS (--total-shards)"),
        ({"shard": "3", "total_shards": "3"}, "SHARD (--shard): must be less than total_shards"),
        ({"shard": "1"}, "SHARD (--shard): must be less than total_shards (1)"),
    ],
)
def test_bounds(overrides: dict[str, str], named: str) -> None:
    assert "invalid setting UCDN_EXPORTER_" + named in refusal(**overrides)


def test_the_bounds_themselves_are_accepted() -> None:
    settings = load_settings(
        {**KEYS, "shard": "999", "total_shards": "1000", "project_discovery_interval_seconds": "5"}
    )
    assert (settings.shard, settings.total_shards) == (999, 1000)
    assert settings.project_discovery_interval_seconds == 5


def test_the_environment_sets_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCDN_EXPORTER_SHARD", "2")
    monkeypatch.setenv("UCDN_EXPORTER_TOTAL_SHARDS", "3")
    monkeypatch.setenv("UCDN_EXPORTER_PROJECT_IDS", "auto")
    settings = load_settings(KEYS)
    assert (settings.shard, settings.total_shards, settings.discovers_projects) == (2, 3, True)
