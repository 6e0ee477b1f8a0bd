"""UCloud's credential conventions: its variables, its shared profile files, and the one
precedence over every source, level by level."""

import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.settings.config import Settings, load_settings
from exporter.settings.names import ConfigError

CANARY = "canary-private-9d41c0b3"
LEVELS = ("flag", "ours", "ucloud", "profile", "secrets", "default")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("UCDN_EXPORTER_", "UCLOUD_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


class World:
    """One test's sources: flags, variables, the profile files and a secrets directory."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flags: dict[str, str] = {}
        self.secrets = tmp_path / "secrets"
        self.secrets.mkdir(parents=True)
        self.home = Path(os.environ["HOME"])
        self.config: list[dict[str, Any]] = []
        self.credential: list[dict[str, Any]] = []
        self.monkeypatch = monkeypatch

    def profile(self, name: str = "default", active: bool | None = None, **values: str) -> None:
        """A profile in both files: config keys and credential keys split as UCloud does."""
        self.add_profile(name, active, values)

    def add_profile(self, name: str, active: bool | None, values: dict[str, str]) -> None:
        """:meth:`profile`, its values as a mapping."""
        config = {k: v for k, v in values.items() if k in ("project_id", "base_url")}
        keys = {k: v for k, v in values.items() if k in ("public_key", "private_key")}
        entry: dict[str, Any] = {"profile": name, **config}
        if active is not None:
            entry["active"] = active
        self.config.append(entry)
        if keys:
            self.credential.append({"profile": name, **keys})

    def load(self) -> Settings:
        ucloud = self.home / ".ucloud"
        ucloud.mkdir(exist_ok=True)
        (ucloud / "config.json").write_text(json.dumps(self.config))
        credential = ucloud / "credential.json"
        credential.write_text(json.dumps(self.credential))
        credential.chmod(0o600)
        return load_settings(self.flags, secrets_dir=self.secrets)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


# Each setting's name at each level (None: the level does not give it) and how to read it.
Setter = Callable[[World, str], None]


def setter(field: str, ours: str, ucloud: str, profile_key: str, secrets: bool) -> dict[str, Any]:
    def flag(w: World, v: str) -> None:
        w.flags[field] = v

    def our_variable(w: World, v: str) -> None:
        w.monkeypatch.setenv(ours, v)

    def ucloud_variable(w: World, v: str) -> None:
        w.monkeypatch.setenv(ucloud, v)

    def profile(w: World, v: str) -> None:
        w.add_profile("default", None, {profile_key: v})

    def secrets_file(w: World, v: str) -> None:
        (w.secrets / ours).write_text(v)
        (w.secrets / ours).chmod(0o600)

    levels: dict[str, Setter | None] = {
        "flag": flag,
        "ours": our_variable,
        "ucloud": ucloud_variable,
        "profile": profile,
        "secrets": secrets_file if secrets else None,
        "default": None,
    }
    return levels


SETTINGS: dict[str, tuple[dict[str, Any], Callable[[Settings], str], Callable[[str], str]]] = {
    "public_key": (
        setter("public_key", "UCDN_EXPORTER_PUBLIC_KEY", "UCLOUD_PUBLIC_KEY", "public_key", True),
        lambda s: s.public_key,
        lambda level: f"pub-{level}",
    ),
    "private_key": (
        setter(
            "private_key", "UCDN_EXPORTER_PRIVATE_KEY", "UCLOUD_PRIVATE_KEY", "private_key", True
        ),
        lambda s: s.private_key.get_secret_value(),
        lambda level: f"{CANARY}-{level}",
    ),
    "project_ids": (
        setter(
            "project_ids", "UCDN_EXPORTER_PROJECT_IDS", "UCLOUD_PROJECT_ID", "project_id", False
        ),
        lambda s: ",".join(s.project_ids),
        lambda level: f"org-{level}",
    ),
    "api_url": (
        setter("api_url", "UCDN_EXPORTER_API_URL", "UCLOUD_API_BASE_URL", "base_url", False),
        lambda s: s.api_url,
        lambda level: f"https://{level}.example/",
    ),
}
DEFAULTS = {"project_ids": "", "api_url": "https://api.an-link.com/"}
# Each pair of adjacent levels a setting has: the higher one must win.
PAIRS = [
    (field, higher, lower)
    for field, (levels, _, _) in SETTINGS.items()
    for higher, lower in zip(
        [name for name in LEVELS if levels[name] or name == "default"],
        [name for name in LEVELS if levels[name] or name == "default"][1:],
        strict=False,
    )
]


def keys_elsewhere(world: World, field: str) -> None:
    """The keys a load needs, by flag, unless the test is about one of them."""
    if field not in ("public_key", "private_key"):
        world.flags.update(public_key="pub", private_key=CANARY)
    elif field == "public_key":
        world.flags["private_key"] = CANARY
    else:
        world.flags["public_key"] = "pub"


@pytest.mark.parametrize(("field", "higher", "lower"), PAIRS, ids="-".join)
def test_the_higher_level_wins(world: World, field: str, higher: str, lower: str) -> None:
    levels, read, value = SETTINGS[field]
    keys_elsewhere(world, field)
    for level in (higher, lower):
        if levels[level]:
            levels[level](world, value(level))
    expected = DEFAULTS.get(field) if higher == "default" else value(higher)
    assert read(world.load()) == expected


@pytest.mark.parametrize("field", list(SETTINGS))
def test_each_level_alone_gives_the_setting(world: World, field: str) -> None:
    # The pairs show order; this shows no level is skipped when it is the only one.
    levels, read, value = SETTINGS[field]
    for level, set_level in levels.items():
        if set_level is None:
            continue
        fresh = World(world.secrets.parent / level, world.monkeypatch)
        keys_elsewhere(fresh, field)
        for name in ("UCDN_EXPORTER_", "UCLOUD_"):
            for variable in [v for v in os.environ if v.startswith(name)]:
                world.monkeypatch.delenv(variable)
        set_level(fresh, value(level))
        assert read(fresh.load()) == value(level), level


def test_the_profile_gives_all_four_at_once(world: World) -> None:
    world.profile(
        public_key="pub-p",
        private_key=CANARY,
        project_id="org-p1,org-p2",
        base_url="https://gw.example/",
    )
    settings = world.load()
    assert (settings.public_key, settings.private_key.get_secret_value()) == ("pub-p", CANARY)
    assert settings.project_ids == ["org-p1", "org-p2"]
    assert settings.api_url == "https://gw.example/"
    assert settings.accounts[0].project_ids == ("org-p1", "org-p2")


def test_the_active_profile_wins_over_default(world: World) -> None:
    world.profile("default", public_key="pub-default", private_key=CANARY)
    world.profile("prod", active=True, public_key="pub-prod", private_key=CANARY)
    assert world.load().public_key == "pub-prod"


def test_without_an_active_profile_default_is_taken(world: World) -> None:
    world.profile("prod", active=False, public_key="pub-prod", private_key=CANARY)
    world.profile("default", public_key="pub-default", private_key=CANARY)
    assert world.load().public_key == "pub-default"


def test_ucloud_profile_wins_over_the_active_one(world: World) -> None:
    world.profile("default", active=True, public_key="pub-default", private_key=CANARY)
    world.profile("staging", public_key="pub-staging", private_key=CANARY)
    world.monkeypatch.setenv("UCLOUD_PROFILE", "staging")
    assert world.load().public_key == "pub-staging"


def test_no_profile_file_is_no_profile(world: World) -> None:
    # Neither file exists: the keys are simply missing, as without UCloud's tools.
    with pytest.raises(ConfigError, match=r"UCDN_EXPORTER_PUBLIC_KEY \(--public-key\): required"):
        load_settings(secrets_dir=world.secrets)


def test_a_named_profile_that_no_file_holds_is_one_line(world: World) -> None:
    world.monkeypatch.setenv("UCLOUD_PROFILE", "prod")
    with pytest.raises(ConfigError) as caught:
        load_settings(secrets_dir=world.secrets)
    message = str(caught.value)
    assert message == (
        f"UCloud profile 'prod' is in neither {world.home}/.ucloud/config.json "
        f"nor {world.home}/.ucloud/credential.json"
    )
    world.profile("default", public_key="pub", private_key=CANARY)
    with pytest.raises(ConfigError, match="UCloud profile 'prod' is in neither"):
        world.load()


def test_the_files_are_where_ucloud_s_variables_say(world: World, tmp_path: Path) -> None:
    config, credential = tmp_path / "c.json", tmp_path / "k.json"
    config.write_text(json.dumps([{"profile": "x", "active": True, "project_id": "org-x"}]))
    credential.write_text(json.dumps([{"profile": "x", "public_key": "p", "private_key": "k"}]))
    credential.chmod(0o600)
    world.monkeypatch.setenv("UCLOUD_SHARED_CONFIG_FILE", str(config))
    world.monkeypatch.setenv("UCLOUD_SHARED_CREDENTIAL_FILE", str(credential))
    settings = load_settings(secrets_dir=world.secrets)
    assert (settings.public_key, settings.project_ids) == ("p", ["org-x"])


MALFORMED = {
    "not-json": f'[{{"profile": "default", "private_key": "{CANARY}"',
    "an-object": json.dumps({"profile": "default", "private_key": CANARY}),
    "a-list-of-strings": json.dumps([CANARY]),
    "a-number": json.dumps(
        [{"profile": "default", "public_key": 7, "project_id": 7, "private_key": CANARY}]
    ),
    "not-utf8": b"\xff\xfe".decode("latin-1") + CANARY,
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("which", ["config.json", "credential.json"])
def test_a_malformed_file_is_one_line_naming_it_never_its_content(
    world: World, which: str, content: str
) -> None:
    path = world.home / ".ucloud" / which
    path.parent.mkdir()
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_settings(secrets_dir=world.secrets)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert CANARY not in message and "canary" not in message


def test_a_bad_base_url_names_the_profile_and_file(world: World) -> None:
    world.profile(base_url=f"ftp://user:{CANARY}@gw.example/", public_key="p", private_key="k")
    with pytest.raises(ConfigError) as caught:
        world.load()
    message = str(caught.value)
    assert message.startswith(f"UCloud profile 'default' in {world.home}/.ucloud/config.json: ")
    assert "base_url must be" in message and CANARY not in message


def test_ucloud_s_variable_names_our_setting_when_bad(world: World) -> None:
    world.monkeypatch.setenv("UCLOUD_API_BASE_URL", f"ftp://{CANARY}/")
    with pytest.raises(ConfigError) as caught:
        load_settings({"public_key": "p", "private_key": "k"}, secrets_dir=world.secrets)
    assert str(caught.value).startswith("invalid setting UCDN_EXPORTER_API_URL (--api-url): ")
    assert CANARY not in str(caught.value)


def test_demo_reads_no_profile(world: World) -> None:
    world.profile(base_url="https://gw.example/", project_id="org-p", public_key="p")
    world.flags["demo"] = "true"
    settings = world.load()
    assert (settings.api_url, settings.project_ids) == ("https://api.an-link.com/", [])


def test_a_home_the_exporter_cannot_read_is_no_profile(world: World) -> None:
    world.monkeypatch.setenv("HOME", "/nonexistent/home")
    settings = load_settings({"public_key": "p", "private_key": "k"}, secrets_dir=world.secrets)
    assert settings.project_ids == []


def warnings_of(settings: Settings) -> list[tuple[str, dict[str, str]]]:
    return [(notice.message, dict(notice.fields)) for notice in settings.notices]


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o604, True), (0o600, False)])
def test_a_credential_file_others_can_read_is_one_warning(
    world: World, mode: int, warned: bool
) -> None:
    world.profile(public_key="pub", private_key=CANARY)
    world.load()
    credential = world.home / ".ucloud" / "credential.json"
    credential.chmod(mode)
    settings = load_settings(secrets_dir=world.secrets)
    expected = [
        (
            f"UCloud credential file is readable by others (mode {mode:04o}); chmod 600 it",
            {"file": str(credential)},
        )
    ]
    assert warnings_of(settings) == (expected if warned else [])


def test_a_group_readable_key_file_warns_only_for_a_foreign_group(world: World) -> None:
    key = world.secrets / "UCDN_EXPORTER_PRIVATE_KEY"
    key.write_text(CANARY)
    key.chmod(0o640)
    # The exporter's own group: a Kubernetes Secret mounted 0440 with fsGroup.
    os.chown(key, -1, os.getegid())
    assert warnings_of(load_settings({"public_key": "p"}, secrets_dir=world.secrets)) == []
    if os.geteuid() != 0:
        pytest.skip("giving a file another group needs root")
    os.chown(key, -1, os.getegid() + 1)
    assert warnings_of(load_settings({"public_key": "p"}, secrets_dir=world.secrets)) == [
        (
            "secrets file is readable by others (mode 0640); chmod 600 it",
            {"file": str(key)},
        )
    ]


def test_a_warning_logs_the_file_never_the_key(world: World) -> None:
    world.profile(public_key="pub", private_key=CANARY)
    world.load()
    (world.home / ".ucloud" / "credential.json").chmod(0o644)
    (notice,) = load_settings(secrets_dir=world.secrets).notices
    for formatter in (LogfmtFormatter(), JsonFormatter()):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger = logging.getLogger(f"test_ucloud_profiles.{id(stream)}")
        logger.propagate = False
        logger.addHandler(handler)
        # As the command line logs each notice once logging is set up.
        logger.warning(notice.message, extra={"fields": dict(notice.fields)})
        line = stream.getvalue()
        assert line.count("\n") == 1 and "credential.json" in line and "chmod 600" in line
        assert CANARY not in line
