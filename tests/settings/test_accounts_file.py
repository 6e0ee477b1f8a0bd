"""The accounts file: several accounts, each with its keys, gateway, projects and platforms,
and one line naming the file, the account and the field for every mistake."""

import json
import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from exporter.settings.accounts import AccountSettings
from exporter.settings.config import Settings, load_settings
from exporter.settings.names import ConfigError

CANARY = "canary-private-3fa0c6e2"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("UCDN_EXPORTER_", "UCLOUD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


def key_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def load(tmp_path: Path, text: str, **flags: object) -> Settings:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(text)
    return load_settings({"accounts_file": str(accounts), **flags}, secrets_dir=tmp_path)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message and CANARY not in message
    assert message.startswith(f"invalid accounts file {tmp_path}/accounts.yaml: "), message
    return message.removeprefix(f"invalid accounts file {tmp_path}/accounts.yaml: ")


def test_every_way_to_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file(tmp_path / "b.pub", "pub-b")
    key_file(tmp_path / "b.key", CANARY + "-b")
    monkeypatch.setenv("C_PUBLIC", "pub-c")
    monkeypatch.setenv("C_PRIVATE", CANARY + "-c")
    ucloud = tmp_path / ".ucloud"
    ucloud.mkdir()
    (ucloud / "config.json").write_text(
        json.dumps([{"profile": "a", "base_url": "https://a.example/"}])
    )
    key_file(
        ucloud / "credential.json",
        json.dumps([{"profile": "a", "public_key": "pub-a", "private_key": CANARY + "-a"}]),
    )
    settings = load(
        tmp_path,
        """
- name: a
  profile: a
  projects: auto
  project_filter: ^prod-
  platforms: [cdn, dcdn]
- name: b
  public_key_file: b.pub
  private_key_file: b.key
  api_url: https://b.example/
  projects: [org-b1, org-b2]
- name: c
  public_key_env: C_PUBLIC
  private_key_env: C_PRIVATE
""",
    )
    assert settings.accounts == (
        AccountSettings(
            "a",
            "pub-a",
            SecretStr(CANARY + "-a"),
            "https://a.example/",
            None,
            re.compile("^prod-"),
            ("cdn", "dcdn"),
        ),
        AccountSettings(
            "b",
            "pub-b",
            SecretStr(CANARY + "-b"),
            "https://b.example/",
            ("org-b1", "org-b2"),
            None,
            ("cdn",),
        ),
        AccountSettings(
            "c",
            "pub-c",
            SecretStr(CANARY + "-c"),
            "https://api.an-link.com/",
            ("",),
            None,
            ("cdn",),
        ),
    )
    assert settings.notices == ()


def test_an_inline_private_key_is_accepted_with_a_warning_naming_the_account(
    tmp_path: Path,
) -> None:
    settings = load(tmp_path, f"- name: inline\n  public_key: pub\n  private_key: {CANARY}\n")
    assert settings.accounts[0].private_key.get_secret_value() == CANARY
    (notice, *others) = settings.notices
    assert notice.fields == {"account": "inline", "file": str(tmp_path / "accounts.yaml")}
    assert "inline" in notice.message and CANARY not in repr(settings.notices)
    # The file is 0644 here: readable by others, and it holds a key.
    assert [other.message for other in others] == [
        "accounts file with a private key is readable by others (mode 0644); chmod 600 it"
    ]


def test_a_key_file_others_can_read_is_a_warning(tmp_path: Path) -> None:
    key_file(tmp_path / "k.pub", "pub")
    key_file(tmp_path / "k.key", CANARY).chmod(0o644)
    settings = load(tmp_path, "- {name: k, public_key_file: k.pub, private_key_file: k.key}\n")
    assert [(n.message, dict(n.fields)) for n in settings.notices] == [
        (
            "key file is readable by others (mode 0644); chmod 600 it",
            {"file": str(tmp_path / "k.key")},
        )
    ]


def test_top_level_keys_are_not_required_with_an_accounts_file(tmp_path: Path) -> None:
    settings = load(tmp_path, "- {name: x, public_key: p, private_key: k}\n")
    assert settings.public_key == "" and [a.name for a in settings.accounts] == ["x"]


def test_demo_needs_no_keys_per_account(tmp_path: Path) -> None:
    settings = load(tmp_path, "- {name: x, projects: [org-x]}\n", demo=True)
    assert settings.accounts[0].public_key == ""
    assert "account 'x' public_key: required" in refusal(tmp_path, "- {name: x}\n")


REFUSALS = {
    "unknown-key": (
        "- {name: a, public_key: p, private_key: k, regoin: cn-bj2}",
        "account 'a' regoin: unknown key",
    ),
    "unknown-key-like-a-key": (
        f"- {{name: a, public_key: p, private_key: k, {CANARY}: x}}",
        "account 'a': an unknown key",
    ),
    "duplicate-name": (
        "- {name: a, public_key: p, private_key: k}\n"
        "- {name: a, public_key: p, private_key: k, projects: [org-2]}",
        "account 'a' name: two accounts have this name",
    ),
    "missing-key": ("- {name: a, public_key: p}", "account 'a' public_key: give both"),
    "missing-variable": (
        "- {name: a, public_key_env: NOT_SET_1, private_key_env: NOT_SET_2}",
        "account 'a' public_key_env: variable NOT_SET_1 is not set",
    ),
    "missing-file": (
        "- {name: a, public_key_file: none.pub, private_key_file: none.key}",
        "account 'a' public_key_file: ",
    ),
    "two-ways": (
        "- {name: a, profile: p, public_key: p, private_key: k}",
        "account 'a' public_key: the keys come from one of",
    ),
    "bad-platform": (
        "- {name: a, public_key: p, private_key: k, platforms: [cdn, edge]}",
        "account 'a' platforms: Input should be 'cdn' or 'dcdn'",
    ),
    "bad-url": (
        f"- {{name: a, public_key: p, private_key: k, api_url: 'ftp://{CANARY}/'}}",
        "account 'a' api_url: must be an http:// or https:// URL with a host",
    ),
    "bad-filter": (
        "- {name: a, public_key: p, private_key: k, projects: auto, project_filter: '('}",
        "account 'a' project_filter: not a regular expression",
    ),
    "filter-without-auto": (
        "- {name: a, public_key: p, private_key: k, project_filter: x}",
        "account 'a' project_filter: needs projects 'auto'",
    ),
    "auto-in-a-list": (
        "- {name: a, public_key: p, private_key: k, projects: [auto, org-1]}",
        "account 'a' projects: 'auto' is written alone",
    ),
    "unnamed": ("- {public_key: p, private_key: k}", "account 0 name: Field required"),
    "not-a-list": ("name: a", "must be a YAML list of accounts"),
    "not-yaml": (f"- {{name: a, private_key: {CANARY}", "not YAML (line "),
    "a-missing-profile": (
        "- {name: a, profile: nowhere}",
        "account 'a' profile: UCloud profile 'nowhere' is in neither",
    ),
    "clash": (
        "- {name: a, public_key: p, private_key: k, projects: [org-1, org-2]}\n"
        "- {name: b, public_key: p, private_key: k, projects: [org-2], platforms: [dcdn, cdn]}",
        "accounts a and b both publish project org-2 on cdn",
    ),
    "clash-on-the-default-project": (
        "- {name: a, public_key: p, private_key: k}\n- {name: b, public_key: p, private_key: k}",
        "accounts a and b both publish project default on cdn",
    ),
}


@pytest.mark.parametrize(("text", "expected"), REFUSALS.values(), ids=REFUSALS.keys())
def test_each_mistake_is_one_line_naming_the_file_account_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert refusal(tmp_path, text + "\n").startswith(expected)


def test_one_project_on_two_platforms_of_two_accounts_is_no_clash(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "- {name: a, public_key: p, private_key: k, projects: [org-1], platforms: [cdn]}\n"
        "- {name: b, public_key: p, private_key: k, projects: [org-1], platforms: [dcdn]}\n",
    )
    assert [account.platforms for account in settings.accounts] == [("cdn",), ("dcdn",)]


def test_a_missing_accounts_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"UCDN_EXPORTER_ACCOUNTS_FILE \(--accounts-file\): "):
        load_settings({"accounts_file": str(tmp_path / "nowhere.yaml")})
