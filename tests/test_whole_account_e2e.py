"""The whole account as a user runs it: the exporter as a process, its real ``/metrics``.

Each test starts ``python -m exporter`` against simulated gateways on loopback whose
accounts hold declared projects (tasks on both platforms), and changes them while the
exporter runs: a project added, one removed, ``GetProjectList`` refused by IAM, answers
that echo a private key. Two accounts of an accounts file each sign with their own keys,
one read from key files, the other from the environment names the file gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from exposition import Samples, value
from faultkit import (
    CANARY,
    PUBLIC_KEY,
    Exporter,
    assert_no_secret,
    exporter_args,
    signatures,
)
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION, PROJECTS_ACTION
from exporter.simulator.account import Project
from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

NOW = int(time.time())
PLATFORMS = ("cdn", "dcdn")
ACCOUNT = {"org-alpha": "Alpha", "org-beta": "Beta shop", "org-gamma": "Gamma"}
# Tasks for the projects a test adds while the exporter runs, too.
WITH_TASKS = (*ACCOUNT, "org-delta", "org-media", "org-video")
TASKS_PER_TARGET = 4
INTERVAL = "5"  # the shortest discovery interval the settings accept
CHANGE_SECONDS = 12.0  # a rediscovery is due 5 s after the last one: a scrape then runs it

# Two accounts' private keys: distinctive, so that any occurrence in output is a leak.
SHOP_KEYS = ("shop-public", "canary-SHOP-private-5e4d3c2b")
MEDIA_KEYS = ("media-public", "canary-MEDIA-private-9a8b7c6d")


def dataset() -> StaticDataset:
    """Tasks for every project of :data:`WITH_TASKS` on both platforms, all in the window."""
    return StaticDataset(
        {
            (project_id, is_dcdn): generate_tasks(
                TASKS_PER_TARGET, 2, now=NOW, seed=index, lookback=3600
            )
            for index, project_id in enumerate(WITH_TASKS)
            for is_dcdn in (False, True)
        }
    )


@pytest.fixture
def account_api() -> Iterator[Callable[..., SimulatedApi]]:
    """Start simulators whose accounts hold the given projects (ID -> name); stop them after."""
    started: list[SimulatedApi] = []

    def start(
        projects: dict[str, str], keys: tuple[str, str] = (PUBLIC_KEY, CANARY)
    ) -> SimulatedApi:
        listed = [Project(project_id, name) for project_id, name in projects.items()]
        api = SimulatedApi(*keys, dataset(), projects=listed).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def up_targets(parsed: Samples) -> dict[tuple[str, str], float]:
    """``ucdn_prefetch_up`` by (project_id, platform)."""
    found = {}
    for (name, labels), found_value in parsed.items():
        if name == "ucdn_prefetch_up":
            label = dict(labels)
            found[(label["project_id"], label["platform"])] = found_value
    return found


def project_infos(parsed: Samples) -> set[tuple[str, str, str]]:
    """(account, project_id, project_name) of every ``ucdn_project_info`` sample of value 1."""
    return {
        (label["account"], label["project_id"], label["project_name"])
        for (name, labels), found_value in parsed.items()
        if name == "ucdn_project_info" and found_value == 1
        for label in [dict(labels)]
    }


def projects_in(parsed: Samples) -> set[str]:
    """Every ``project_id`` label value of the exposition, whatever the family."""
    return {dict(labels)["project_id"] for _, labels in parsed if "project_id" in dict(labels)}


def every_target(*project_ids: str, up: float = 1.0) -> dict[tuple[str, str], float]:
    """Each of ``project_ids`` on each platform, up (or ``up``)."""
    return {(project_id, platform): up for project_id in project_ids for platform in PLATFORMS}


def scrape_until(
    exporter: Exporter, done: Callable[[Samples], bool], within: float = CHANGE_SECONDS
) -> tuple[Samples, float]:
    """Scrape every half second until ``done`` holds (or ``within`` passed): the last
    exposition and the seconds it took."""
    started = time.monotonic()
    while True:
        scrape = exporter.scrape()
        assert scrape.status == 200, scrape.text
        parsed = scrape.samples()
        waited = time.monotonic() - started
        if done(parsed) or waited > within:
            return parsed, waited
        time.sleep(0.5)


def records(exporter: Exporter, msg: str, at_least: int = 1) -> list[dict[str, str]]:
    """The log records whose message is ``msg``, waiting (bounded) until ``at_least`` are read:
    the lines reach us through a pipe, after the scrape's answer may have."""
    give_up = time.monotonic() + 5.0
    while True:
        found = [record for record in exporter.log_records() if record.get("msg") == msg]
        if len(found) >= at_least or time.monotonic() > give_up:
            return found
        time.sleep(0.05)


def auto_args(api: SimulatedApi, *extra: str) -> list[str]:
    """The account's every project on both platforms, prefetch only, debug logs."""
    return exporter_args(
        api.url, "--project-ids", "auto", "--platforms", ",".join(PLATFORMS), *extra
    )


def test_auto_collects_every_project_and_follows_one_added_and_one_removed_without_a_restart(
    account_api: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = account_api(ACCOUNT)
    exporter = start_exporter(*auto_args(api, "--project-discovery-interval-seconds", INTERVAL))
    first = exporter.metrics()
    assert up_targets(first) == every_target(*ACCOUNT)
    assert project_infos(first) == {("default", pid, name) for pid, name in ACCOUNT.items()}
    assert value(first, "ucdn_project_discovery_projects", account="default") == 3
    assert value(first, "ucdn_project_discovery_success", account="default") == 1
    asked = {r.params.get("ProjectId") for r in api.requests if r.action == PREFETCH_ACTION}
    assert asked == set(ACCOUNT)

    api.add_project("org-delta", "Delta")
    api.remove_project("org-beta")
    expected = every_target("org-alpha", "org-gamma", "org-delta")
    after, waited = scrape_until(exporter, lambda parsed: up_targets(parsed) == expected)
    assert up_targets(after) == expected, f"not followed within {waited:.1f}s"
    assert waited < 10.5, "a rediscovery is due five seconds after the last one"
    assert "org-beta" not in projects_in(after), "the removed project's series are gone"
    assert project_infos(after) == {
        ("default", "org-alpha", "Alpha"),
        ("default", "org-gamma", "Gamma"),
        ("default", "org-delta", "Delta"),
    }
    assert exporter.process.poll() is None, "no restart"
    [change] = [r for r in records(exporter, "projects discovered", 2) if r["added"] == "org-delta"]
    assert change["removed"] == "org-beta"
    assert change["projects"] == "3"


def test_the_filter_narrows_the_discovered_projects_by_id_or_name(
    account_api: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = account_api(ACCOUNT)
    # org-alpha by its ID, org-beta by its name ("Beta shop"); org-gamma by neither.
    env = {"UCDN_EXPORTER_PROJECT_FILTER": "^org-alpha$|shop"}
    exporter = start_exporter(*auto_args(api), env=env)
    parsed = exporter.metrics()
    assert up_targets(parsed) == every_target("org-alpha", "org-beta")
    assert projects_in(parsed) == {"org-alpha", "org-beta"}
    assert project_infos(parsed) == {
        ("default", "org-alpha", "Alpha"),
        ("default", "org-beta", "Beta shop"),
    }
    assert value(parsed, "ucdn_project_discovery_projects", account="default") == 2
    assert api.request_count("org-gamma") == 0, "a project filtered out costs no request"


def test_an_iam_refusal_after_a_good_discovery_keeps_the_list_and_logs_one_line_with_the_hint(
    account_api: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = account_api(ACCOUNT)
    exporter = start_exporter(*auto_args(api, "--project-discovery-interval-seconds", INTERVAL))
    before = exporter.metrics()
    assert up_targets(before) == every_target(*ACCOUNT)
    good_at = value(
        before, "ucdn_project_discovery_last_success_timestamp_seconds", account="default"
    )
    assert good_at is not None

    api.refuse_project_list = True
    parsed, waited = scrape_until(
        exporter,
        lambda parsed: value(parsed, "ucdn_project_discovery_success", account="default") == 0,
    )
    assert value(parsed, "ucdn_project_discovery_success", account="default") == 0, waited
    assert value(parsed, "ucdn_project_discovery_failures_total", account="default") == 1
    assert up_targets(parsed) == every_target(*ACCOUNT), "the last good list is collected"
    assert project_infos(parsed) == project_infos(before)
    last = value(parsed, "ucdn_project_discovery_last_success_timestamp_seconds", account="default")
    assert last == good_at
    discoveries = [r for r in api.requests if r.action == PROJECTS_ACTION]
    assert len(discoveries) == 2, "the start's discovery and the refused one"

    [line] = records(exporter, "project discovery failed")
    assert line["level"] == "warning"
    assert line["account"] == "default"
    assert line["detail"].startswith("RetCode 299")
    assert line["projects_kept"] == "3"
    assert line["hint"].startswith(f"IAM denied {PROJECTS_ACTION}")
    assert "PROJECT_IDS" in line["hint"], "a sub-account is told to list its projects"
    warnings = [r for r in exporter.log_records() if r.get("level") in ("warning", "error")]
    assert warnings == [line], "one line says so, nothing else warns"


def write_key_file(path: Path, content: str) -> str:
    """A key file as a Secret mounts it: readable by its owner alone."""
    path.write_text(content + "\n")
    path.chmod(0o600)
    return path.name


def test_two_accounts_on_two_gateways_each_with_its_keys_and_neither_key_in_any_output(
    tmp_path: Path,
    account_api: Callable[..., SimulatedApi],
    start_exporter: Callable[..., Exporter],
) -> None:
    shop = account_api({"org-alpha": "Alpha", "org-beta": "Beta shop"}, keys=SHOP_KEYS)
    media = account_api({"org-media": "Media", "org-video": "Video"}, keys=MEDIA_KEYS)
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        f"""\
- name: shop
  public_key_file: {write_key_file(tmp_path / "shop.pub", SHOP_KEYS[0])}
  private_key_file: {write_key_file(tmp_path / "shop.key", SHOP_KEYS[1])}
  api_url: {shop.url}
  projects: auto
  platforms: [cdn, dcdn]
- name: media
  public_key_env: MEDIA_PUBLIC_KEY
  private_key_env: MEDIA_PRIVATE_KEY
  api_url: {media.url}
  projects: [org-media]
"""
    )
    env = {"MEDIA_PUBLIC_KEY": MEDIA_KEYS[0], "MEDIA_PRIVATE_KEY": MEDIA_KEYS[1]}
    args = ["--accounts-file", str(accounts), "--log-level", "debug", "--max-retries", "0"]
    exporter = start_exporter(*args, env=env)
    good = exporter.scrape()
    parsed = good.samples()
    assert up_targets(parsed) == {
        **every_target("org-alpha", "org-beta"),
        ("org-media", "cdn"): 1.0,
    }
    assert project_infos(parsed) == {
        ("shop", "org-alpha", "Alpha"),
        ("shop", "org-beta", "Beta shop"),
        ("media", "org-media", ""),  # listed, not discovered: no name
    }
    assert value(parsed, "ucdn_project_discovery_success", account="shop") == 1
    assert value(parsed, "ucdn_project_discovery_success", account="media") is None
    # Each gateway was asked only for its own account's projects, signed with its keys.
    assert {r.params.get("ProjectId") for r in shop.requests if r.action == PREFETCH_ACTION} == {
        "org-alpha",
        "org-beta",
    }
    assert {r.params.get("ProjectId") for r in media.requests if r.action == PREFETCH_ACTION} == {
        "org-media"
    }
    assert {r.params.get("PublicKey") for r in shop.requests} == {SHOP_KEYS[0]}
    assert {r.params.get("PublicKey") for r in media.requests} == {MEDIA_KEYS[0]}
    assert media.requests_by_action()[PROJECTS_ACTION] == 0

    # Each gateway quotes its account's private key back in an error message; then in an
    # error page (media), and the signatures in an error (shop) and in a header of a good
    # answer (media, still up).
    rounds: list[tuple[Callable[[SimulatedApi], None], Callable[[SimulatedApi], None], float]] = [
        (
            lambda api: api.faults.ret_code(171, f"bad signature for key {SHOP_KEYS[1]}"),
            lambda api: api.faults.ret_code(171, f"bad signature for key {MEDIA_KEYS[1]}"),
            0.0,
        ),
        (
            lambda api: api.faults.echo_signature("message", upper=True),
            lambda api: api.faults.http_error(500, body=f"<pre>key={MEDIA_KEYS[1]}</pre>"),
            0.0,
        ),
        (
            lambda api: api.faults.echo_signature("message"),
            lambda api: api.faults.echo_signature("header", upper=True),
            1.0,
        ),
    ]
    for echo_shop, echo_media, media_up in rounds:
        echo_shop(shop)
        echo_media(media)
        scraped = up_targets(exporter.scrape().samples())
        assert scraped == {
            **every_target("org-alpha", "org-beta", up=0),
            ("org-media", "cdn"): media_up,
        }
        shop.faults.clear()
        media.faults.clear()
    exporter.stop()

    echoed_keys = {
        record["project_id"]
        for record in exporter.failures()
        if record["detail"] == "RetCode 171: bad signature for key <redacted>"
    }
    assert echoed_keys == {"org-alpha", "org-beta", "org-media"}, "each key echoed, redacted"
    # A gateway may spell a secret in either case: compare in lower case.
    secrets = {SHOP_KEYS[1], MEDIA_KEYS[1], *signatures(shop), *signatures(media)}
    assert len(secrets) > 4, "both gateways' signatures are among them"
    lowered = {secret.lower() for secret in secrets}
    for where, text in exporter.all_output():
        assert_no_secret(where, text.lower(), lowered)


def test_two_accounts_listing_one_project_on_one_platform_are_refused_at_start(
    tmp_path: Path,
) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        """\
- name: shop
  public_key_env: SHOP_PUBLIC_KEY
  private_key_env: SHOP_PRIVATE_KEY
  projects: [org-alpha, org-shared]
  platforms: [cdn, dcdn]
- name: media
  public_key_env: SHOP_PUBLIC_KEY
  private_key_env: SHOP_PRIVATE_KEY
  projects: [org-shared]
  platforms: [cdn]
"""
    )
    env = {
        "UCDN_EXPORTER_ACCOUNTS_FILE": str(accounts),
        "SHOP_PUBLIC_KEY": SHOP_KEYS[0],
        "SHOP_PRIVATE_KEY": SHOP_KEYS[1],
    }
    exporter = Exporter([], env=env)
    assert exporter.wait_exit() == 2
    [line] = exporter.stderr.strip().splitlines()
    assert "accounts shop and media both publish project org-shared on cdn" in line
    assert "Traceback" not in exporter.stderr
    assert_no_secret("output", exporter.stdout + exporter.stderr, {SHOP_KEYS[1]})


def test_check_config_with_auto_has_a_project_list_row_and_a_row_per_target_found(
    account_api: Callable[..., SimulatedApi],
) -> None:
    api = account_api(ACCOUNT)
    exporter = Exporter(auto_args(api, "--check-config"))
    assert exporter.wait_exit() == 0, exporter.log()
    header, *rows = [line.split() for line in exporter.stdout.splitlines()]
    assert header == ["TARGET", "ACTION", "TIME", "RESULT"]
    assert rows[0][:2] == ["default", PROJECTS_ACTION]
    assert rows[0][3:] == ["ok:", "3", "projects"]
    by_target = {row[0]: row for row in rows[1:]}
    assert len(by_target) == len(rows) - 1, "one row per target"
    assert set(by_target) == {f"{pid}/{platform}" for pid in ACCOUNT for platform in PLATFORMS}
    for row in by_target.values():
        assert row[1] == PREFETCH_ACTION
        assert row[3:] == ["ok:", str(TASKS_PER_TARGET), "tasks", "in", "the", "window"]
