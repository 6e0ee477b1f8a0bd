"""The command line's other modes: --check-config, --once, --demo's keys, and JSON logs."""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, exporter_args
from exposition import samples
from faultkit import Exporter, assert_no_secret, signatures
from simdata import domains
from simfaults import SimulatedApi

from exporter.gateway.answers import (
    DOMAINS_ACTION,
    PREFETCH_ACTION,
    PREFETCH_ENABLE_ACTION,
    QUOTA_ACTION,
    REFRESH_ACTION,
)
from exporter.simulator.protocol import Quota
from exporter.simulator.static import StaticDataset, generate_tasks

pytestmark = pytest.mark.e2e

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CANARY = "canary-private-7d41e2b9"
WEB_DOMAINS = domains("web", "a.web.example", "b.web.example")
SIGNATURE_HINT = (
    "hint: check the private key: it must be the one issued with the public key (a proxy "
    "that rewrites the request also breaks the signature)"
)
IAM_HINT = "grant the key's sub-account that permission (a sub-account must also set PROJECT_IDS)"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("UCDN_", "UCLOUD_"))}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def dataset(now: int) -> StaticDataset:
    return StaticDataset(
        {
            ("web", False): generate_tasks(12, 2, now=now),
            ("web", True): generate_tasks(3, 1, now=now),
        },
        refresh_tasks={("web", False): generate_tasks(5, 1, now=now)},
        domains={"web": WEB_DOMAINS},
        quotas={("web", WEB_DOMAINS[0].domain_id): Quota(submit_prefetch_count=120)},
    )


def table(stdout: str) -> list[list[str]]:
    """The --check-config table: each row's cells without TIME (checked here: seconds, or "-"
    for a call not tried), and each hint line as one cell (checked to stand under RESULT)."""
    header, *lines = stdout.splitlines()
    assert header.split() == ["TARGET", "ACTION", "TIME", "RESULT"]
    rows = []
    for line in lines:
        if line.lstrip().startswith("hint: "):
            assert line.index("hint: ") == header.index("RESULT"), line
            rows.append([line.strip()])
            continue
        where, action, seconds, result = re.split(r"\s{2,}", line, maxsplit=3)
        assert re.fullmatch(r"[0-9]+\.[0-9]{2}s", seconds) or (
            seconds == "-" and result.startswith("not tried: ")
        ), line
        assert line.index(result) == header.index("RESULT"), line
        rows.append([where, action, result])
    return rows


def test_check_config_calls_every_action_once_and_exits_0_when_all_answer(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(
        *exporter_args(api), "--project-ids", "web", "--platforms", "cdn,dcdn", "--check-config"
    )
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [
        ["web/cdn", PREFETCH_ACTION, "ok: 12 tasks in the window"],
        ["web/cdn", REFRESH_ACTION, "ok: 5 tasks in the window"],
        ["web/dcdn", PREFETCH_ACTION, "ok: 3 tasks in the window"],
        ["web/dcdn", REFRESH_ACTION, "ok: 0 tasks in the window"],
        ["web", DOMAINS_ACTION, "ok: 2 domains"],
        ["web", QUOTA_ACTION, "ok: 120 of 500 prefetches used today"],
        ["web", PREFETCH_ENABLE_ACTION, "ok: prefetch on"],
    ]
    # One signed call per target and kind, and per project for the domain calls.
    assert api.requests_by_action() == {
        PREFETCH_ACTION: 2,
        REFRESH_ACTION: 2,
        DOMAINS_ACTION: 1,
        QUOTA_ACTION: 1,
        PREFETCH_ENABLE_ACTION: 1,
    }


def test_check_config_calls_only_what_the_settings_will_call(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(
        *exporter_args(api),
        "--project-ids",
        "web",
        "--task-kinds",
        "prefetch",
        "--quota-interval-seconds",
        "0",
        "--check-config",
    )
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [["web/cdn", PREFETCH_ACTION, "ok: 12 tasks in the window"]]
    assert api.requests_by_action() == {PREFETCH_ACTION: 1}


def test_check_config_does_not_try_a_domain_call_without_a_domain(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(
        *exporter_args(api), "--project-ids", "shop", "--task-kinds", "refresh", "--check-config"
    )
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [
        ["shop/cdn", REFRESH_ACTION, "ok: 0 tasks in the window"],
        ["shop", DOMAINS_ACTION, "ok: 0 domains"],
        ["shop", QUOTA_ACTION, "not tried: the project has no domain"],
        ["shop", PREFETCH_ENABLE_ACTION, "not tried: the project has no domain"],
    ]
    assert api.requests_by_action() == {REFRESH_ACTION: 1, DOMAINS_ACTION: 1}


def test_check_config_exits_1_and_says_why_when_a_target_fails(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(0))
    api.faults.ret_code(171, "Signature VerifyAC Error", target=("web", True))
    result = run(
        *exporter_args(api),
        "--project-ids",
        "web",
        "--platforms",
        "cdn,dcdn",
        "--quota-interval-seconds",
        "0",
        "--max-retries",
        "0",
        "--check-config",
    )
    assert result.returncode == 1
    rows = table(result.stdout)
    failed = "failed (api_error: RetCode 171: Signature VerifyAC Error; request "
    assert rows[:2] == [
        ["web/cdn", PREFETCH_ACTION, "ok: 0 tasks in the window"],
        ["web/cdn", REFRESH_ACTION, "ok: 0 tasks in the window"],
    ]
    for row, action in zip(rows[2::2], (PREFETCH_ACTION, REFRESH_ACTION), strict=True):
        assert row[:2] == ["web/dcdn", action]
        # The gateway's X-UCLOUD-REQUEST-UUID, what the provider's support asks for.
        assert re.fullmatch(re.escape(failed) + UUID + r"\)", row[2]), row
    assert rows[3::2] == [[SIGNATURE_HINT]] * 2
    assert len(rows) == 6


def test_check_config_with_a_wrong_private_key_names_every_call_and_the_key(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    args = exporter_args(api, "--project-ids", "web", "--check-config")
    args[args.index("--private-key") : args.index("--private-key") + 2] = []
    result = run(*args, env={"UCDN_EXPORTER_PRIVATE_KEY": CANARY})
    assert result.returncode == 1
    rows = table(result.stdout)
    failed = "failed (api_error: RetCode 171: Signature VerifyAC Error; request "
    for row, action in zip(
        rows[0:6:2], (PREFETCH_ACTION, REFRESH_ACTION, DOMAINS_ACTION), strict=True
    ):
        assert row[:2] == ["web/cdn" if "Task" in action else "web", action]
        assert re.fullmatch(re.escape(failed) + UUID + r"\)", row[2]), row
    assert rows[1:6:2] == [[SIGNATURE_HINT]] * 3
    assert rows[6:] == [
        ["web", QUOTA_ACTION, "not tried: the domain list failed"],
        ["web", PREFETCH_ENABLE_ACTION, "not tried: the domain list failed"],
    ]
    assert api.requests_by_action() == {PREFETCH_ACTION: 1, REFRESH_ACTION: 1, DOMAINS_ACTION: 1}
    # Neither the key nor a signature it made is printed, whatever the gateway said.
    for where, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert_no_secret(where, text, {CANARY, *signatures(api)})


def test_check_config_names_each_action_iam_denies(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    api.refused_actions = {REFRESH_ACTION, PREFETCH_ENABLE_ACTION}
    result = run(*exporter_args(api), "--project-ids", "web", "--check-config")
    assert result.returncode == 1
    rows = table(result.stdout)
    denied = "failed (api_error: RetCode 299: Permission denied by IAM; request "
    assert [row[:2] for row in rows] == [
        ["web/cdn", PREFETCH_ACTION],
        ["web/cdn", REFRESH_ACTION],
        [f"hint: IAM denied {REFRESH_ACTION}: {IAM_HINT}"],
        ["web", DOMAINS_ACTION],
        ["web", QUOTA_ACTION],
        ["web", PREFETCH_ENABLE_ACTION],
        [f"hint: IAM denied {PREFETCH_ENABLE_ACTION}: {IAM_HINT}"],
    ]
    assert [rows[index][2] for index in (0, 3, 4)] == [
        "ok: 12 tasks in the window",
        "ok: 2 domains",
        "ok: 120 of 500 prefetches used today",
    ]
    for index in (1, 5):
        assert re.fullmatch(re.escape(denied) + UUID + r"\)", rows[index][2]), rows[index]


KEY_NAMES = {
    "exporter": ("UCDN_EXPORTER_PUBLIC_KEY", "UCDN_EXPORTER_PRIVATE_KEY"),
    "ucloud": ("UCLOUD_PUBLIC_KEY", "UCLOUD_PRIVATE_KEY"),
}
IGNORING = "demo mode: ignoring the API keys given"


def demo_records(result: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    """The JSON log records of a --demo --check-config run, which must have succeeded."""
    assert result.returncode == 0, result.stderr
    [[where, action, outcome]] = table(result.stdout)  # the demo's keys were taken
    assert (where, action) == ("default/cdn", PREFETCH_ACTION)
    assert re.fullmatch("ok: [0-9]+ tasks in the window", outcome), outcome
    return [json.loads(line) for line in result.stderr.splitlines()]


@pytest.mark.parametrize("where", ["environment", "secrets directory"])
@pytest.mark.parametrize("names", KEY_NAMES.values(), ids=KEY_NAMES.keys())
def test_demo_ignores_api_keys_and_names_where_they_were_given(
    tmp_path: Path, where: str, names: tuple[str, str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    env = {"UCDN_EXPORTER_SECRETS_DIR": str(secrets)}
    keys = dict(zip(names, ("public-key-6b0d", CANARY), strict=True))
    if where == "environment":
        env.update(keys)
    else:
        for name, key in keys.items():
            (secrets / name).write_text(key + "\n")
    result = run(
        "--demo",
        "--check-config",
        "--task-kinds",
        "prefetch",
        "--quota-interval-seconds",
        "0",
        "--log-format",
        "json",
        env=env,
    )
    records = demo_records(result)
    ignoring = [record for record in records if record["msg"] == IGNORING]
    kind = "variables" if where == "environment" else "secrets_files"
    assert [{**record, "ts": ""} for record in ignoring] == [
        {
            "ts": "",
            "level": "info",
            "logger": "exporter.cli",
            "msg": IGNORING,
            kind: ",".join(names),
        }
    ]
    assert_no_secret("the output", result.stdout + result.stderr, set(keys.values()))


def test_demo_names_every_source_of_keys_it_ignores(tmp_path: Path) -> None:
    (tmp_path / "UCDN_EXPORTER_PRIVATE_KEY").write_text(CANARY)
    env = {"UCDN_EXPORTER_SECRETS_DIR": str(tmp_path), "UCLOUD_PUBLIC_KEY": "public-key-6b0d"}
    args = ["--demo", "--check-config", "--task-kinds", "prefetch", "--quota-interval-seconds"]
    result = run(*args, "0", "--public-key", "flag-key-4c2a", "--log-format", "json", env=env)
    ignoring = [record for record in demo_records(result) if record["msg"] == IGNORING]
    assert len(ignoring) == 1
    assert {kind: ignoring[0].get(kind) for kind in ("flags", "variables", "secrets_files")} == {
        "flags": "--public-key",
        "variables": "UCLOUD_PUBLIC_KEY",
        "secrets_files": "UCDN_EXPORTER_PRIVATE_KEY",
    }
    assert CANARY not in result.stdout + result.stderr


def test_demo_without_keys_logs_no_ignoring_line(tmp_path: Path) -> None:
    env = {"UCDN_EXPORTER_SECRETS_DIR": str(tmp_path)}
    args = ["--demo", "--check-config", "--task-kinds", "prefetch", "--quota-interval-seconds"]
    result = run(*args, "0", "--log-format", "json", env=env)
    assert [record["msg"] for record in demo_records(result)] == ["demo mode: simulated API"]


def test_once_writes_the_exposition_to_stdout(simulator: Callable[..., SimulatedApi]) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(*exporter_args(api), "--project-ids", "web", "--task-kinds", "prefetch", "--once")
    assert result.returncode == 0, result.stderr
    metrics = samples(result.stdout)
    assert (
        metrics[("ucdn_prefetch_up", frozenset({("project_id", "web"), ("platform", "cdn")}))] == 1
    )
    assert not any(name.startswith("ucdn_refresh_") for name, _ in metrics)


def test_once_collects_every_kind_and_exits_0_only_when_all_are_up(
    simulator: Callable[..., SimulatedApi],
) -> None:
    api = simulator(dataset(int(time.time())))
    result = run(*exporter_args(api), "--project-ids", "web", "--once")
    metrics = samples(result.stdout)
    target = frozenset({("project_id", "web"), ("platform", "cdn")})
    up = [metrics[(f"ucdn_{kind}_up", target)] for kind in ("prefetch", "refresh")]
    assert up[0] == 1
    assert result.returncode == (0 if all(value == 1 for value in up) else 1), result.stderr
    assert api.request_count() >= 2  # one collection of each kind


def test_once_replaces_the_output_file_atomically_and_exits_1_on_failure(
    simulator: Callable[..., SimulatedApi], tmp_path: Path
) -> None:
    output = tmp_path / "ucdn.prom"
    output.write_text("old contents\n")
    api = simulator(dataset(int(time.time())))
    api.faults.http_error(500)
    result = run(
        *exporter_args(api),
        "--project-ids",
        "web",
        "--max-retries",
        "0",
        "--once",
        "--output",
        str(output),
    )
    assert result.returncode == 1
    text = output.read_text()
    assert "old contents" not in text
    assert 'ucdn_prefetch_up{platform="cdn",project_id="web"} 0.0' in text
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ucdn.prom"]  # no temporary file left


def test_json_logs_are_one_object_per_line(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = simulator(dataset(0))
    api.faults.bad_json()
    exporter = start_exporter(*exporter_args(api), "--log-format", "json", "--max-retries", "0")
    assert exporter.get().status_code == 200
    exporter.stop()
    records = [json.loads(line) for line in exporter.log().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    failure = next(r for r in records if r["msg"] == "collection failed")
    assert failure["reason"] == "invalid_response"
    assert failure["project_id"] == "default"
    assert isinstance(failure["duration_seconds"], float)
    assert re.fullmatch(UUID, failure["request_id"])  # the answer's X-UCLOUD-REQUEST-UUID


def test_credentials_in_the_api_url_stay_out_of_the_start_up_log(
    simulator: Callable[..., SimulatedApi], start_exporter: Callable[..., Exporter]
) -> None:
    api = simulator(dataset(0))
    password = "url-password-3b9f1c"
    url = api.url.replace("http://", f"http://gateway-user:{password}@")
    exporter = start_exporter(*exporter_args(api), "--api-url", url)
    assert exporter.get().status_code == 200
    exporter.stop()
    log = exporter.log()
    assert "msg=started" in log and "<redacted>@127.0.0.1" in log
    assert password not in log and "gateway-user" not in log


def test_a_normal_start_loads_no_simulator_code() -> None:
    # The simulator is for --demo alone: the command line must not import it up front.
    probe = "import sys, exporter.cli; print('exporter.simulator' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "False"
