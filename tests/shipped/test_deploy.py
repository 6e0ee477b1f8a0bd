"""Kubernetes manifests and the systemd unit agree with each other and with the exporter.

Ports, probe paths, names, labels and setting names are written in several files (the
Dockerfile, the manifests, the systemd files, the rules); these tests hold them to the
one place each is defined: the exporter's configuration, the Service, the rule file.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from exporter.cli import build_parser
from exporter.settings.address import DEFAULT_PORT
from exporter.settings.config import Settings, load_settings
from exporter.settings.names import ENV_PREFIX, env_name

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "ucdn-prefetch-exporter.service"
ENV_EXAMPLE = SYSTEMD / "ucdn-prefetch-exporter.env.example"
GENERATOR = KUBERNETES / "generate_prometheusrule.py"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONSOLE_SCRIPT = next(iter(PYPROJECT["project"]["scripts"]))
# Read by exporter.settings.config before Settings exists (it says where Settings reads files from),
# so it is no Settings field; test_secret_files_are_read_from_the_secrets_dir proves it works.
SECRETS_DIR_SETTING = ENV_PREFIX + "SECRETS_DIR"
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Z_]+")
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
assert MANIFESTS, f"no manifest under {KUBERNETES}"
# The shards' StatefulSet and headless Service, listed in the kustomization instead of the
# Deployment and its Service.
SHARDED = KUBERNETES / "statefulset.yaml"
REPLACED_BY_SHARDS = ["deployment.yaml", "service.yaml"]


def documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in ``path``, each required to be a mapping."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert docs and all(isinstance(doc, dict) for doc in docs), path
    return docs


def manifest(kind: str) -> dict[str, Any]:
    """The one manifest of ``kind`` under deploy/kubernetes, the shards' file aside."""
    paths = [path for path in MANIFESTS if path != SHARDED]
    found = [doc for path in paths for doc in documents(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


DEPLOYMENT = manifest("Deployment")
SERVICE = manifest("Service")
SERVICE_MONITOR = manifest("ServiceMonitor")
PROMETHEUS_RULE = manifest("PrometheusRule")
SECRET = manifest("Secret")
KUSTOMIZATION = manifest("Kustomization")
POD = DEPLOYMENT["spec"]["template"]
(CONTAINER,) = POD["spec"]["containers"]
STATEFULSET, HEADLESS_SERVICE = documents(SHARDED)


def dockerfile_values(keyword: str) -> list[str]:
    """Arguments of every ``keyword`` instruction in the Dockerfile."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return re.findall(rf"^{keyword}\s+(.+?)\s*$", text, flags=re.MULTILINE)


def container_port(name_or_number: str | int) -> int:
    """Resolve a port reference (name or number) against the container's ports."""
    for port in CONTAINER["ports"]:
        if name_or_number in (port["name"], port["containerPort"]):
            number: int = port["containerPort"]
            return number
    raise AssertionError(f"the container has no port {name_or_number!r}")


# --- every manifest ------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_parses_and_names_its_kind(path: Path) -> None:
    for doc in documents(path):
        assert doc["apiVersion"] and doc["kind"]
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"] == "ucdn-prefetch-exporter"


def test_kustomization_lists_existing_files_and_every_manifest() -> None:
    listed = set(KUSTOMIZATION["resources"])
    assert listed, "the kustomization lists no resource"
    assert all((KUBERNETES / name).is_file() for name in listed), listed
    # The Secret template stays out on purpose: applying it would deploy placeholder keys;
    # the shards' file goes in instead of the Deployment and its Service.
    others = {p.name for p in MANIFESTS} - {"kustomization.yaml"}
    assert others - listed == {"secret.example.yaml", SHARDED.name}
    assert set(REPLACED_BY_SHARDS) <= listed


def test_kustomization_tags_the_image_with_the_release() -> None:
    (image,) = KUSTOMIZATION["images"]
    assert image["name"] == CONTAINER["image"]
    assert image["newTag"] == PYPROJECT["project"]["version"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_resource() -> None:
    built = build_kustomization(KUBERNETES)
    kinds = sorted(doc["kind"] for doc in built)
    assert kinds == ["Deployment", "PrometheusRule", "Service", "ServiceMonitor"]
    assert {doc["metadata"]["namespace"] for doc in built} == {KUSTOMIZATION["namespace"]}


def build_kustomization(directory: Path) -> list[dict[str, Any]]:
    """What ``kubectl kustomize`` makes of ``directory``: every resource, each a mapping."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_shards_in_place_of_the_deployment(tmp_path: Path) -> None:
    # What docs/scaling.md says to do: list statefulset.yaml instead of the two it replaces.
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy_dir)
    kustomization = copy.deepcopy(KUSTOMIZATION)
    kept = [name for name in kustomization["resources"] if name not in REPLACED_BY_SHARDS]
    kustomization["resources"] = [SHARDED.name, *kept]
    (copy_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    built = build_kustomization(copy_dir)
    kinds = sorted(doc["kind"] for doc in built)
    assert kinds == ["PrometheusRule", "Service", "ServiceMonitor", "StatefulSet"]
    (statefulset,) = [doc for doc in built if doc["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith(KUSTOMIZATION["images"][0]["newName"] + ":")


# --- the Deployment ------------------------------------------------------------------------


def test_pod_runs_as_the_image_user_without_privileges() -> None:
    pod_context = POD["spec"]["securityContext"]
    context = CONTAINER["securityContext"]
    assert pod_context["runAsNonRoot"] is True and context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    (user,) = dockerfile_values("USER")
    assert f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}" == user


def test_probes_need_no_password_and_follow_tls() -> None:
    # Exec, not httpGet: the same check as the image's HEALTHCHECK, which reads the web config.
    liveness = CONTAINER["livenessProbe"]
    (entrypoint,) = dockerfile_values("ENTRYPOINT")
    assert liveness["exec"]["command"] == [*json.loads(entrypoint), "healthcheck"]
    assert "httpGet" not in CONTAINER["readinessProbe"]
    readiness = CONTAINER["readinessProbe"]["tcpSocket"]
    assert container_port(readiness["port"]) == DEFAULT_PORT


def test_resources_are_set() -> None:
    resources = CONTAINER["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_ports_agree_across_dockerfile_deployment_service_and_exporter() -> None:
    (service_port,) = SERVICE["spec"]["ports"]
    (expose,) = dockerfile_values("EXPOSE")
    assert expose.removesuffix("/tcp") == str(DEFAULT_PORT)
    assert container_port(service_port["targetPort"]) == DEFAULT_PORT
    assert service_port["port"] == DEFAULT_PORT


def test_service_selects_the_pods() -> None:
    # An empty selector would pass a subset test and select nothing (or everything).
    selector = SERVICE["spec"]["selector"]
    assert selector and selector.items() <= POD["metadata"]["labels"].items()
    match_labels = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert match_labels and match_labels.items() <= POD["metadata"]["labels"].items()


# --- the shards' StatefulSet --------------------------------------------------------------

SHARD_POD = STATEFULSET["spec"]["template"]
(SHARD_CONTAINER,) = SHARD_POD["spec"]["containers"]
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def test_each_pod_is_the_shard_its_ordinal_names() -> None:
    env = {entry["name"]: entry for entry in SHARD_CONTAINER["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.labels['{POD_INDEX_LABEL}']"
    )
    replicas = STATEFULSET["spec"]["replicas"]
    assert replicas > 1
    # Kubernetes expands $(POD_INDEX) in the arguments; pod 2 runs these:
    args = [arg.replace("$(POD_INDEX)", "2") for arg in SHARD_CONTAINER["args"]]
    parsed = build_parser().parse_args(args)
    assert (int(parsed.shard), int(parsed.total_shards)) == (2, replicas)


def test_without_the_pod_index_label_a_pod_refuses_to_start() -> None:
    # Before Kubernetes 1.28 the label is missing and POD_INDEX empty: one line naming the
    # flag and exit 2 (no restart cures it), never a replica running as shard 0.
    args = [arg.replace("$(POD_INDEX)", "") for arg in SHARD_CONTAINER["args"]]
    keys = ["--public-key", "public", "--private-key", "private"]
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *args, *keys, "--listen-address", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "UCLOUD_"))},
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "--shard" in line


def test_a_shard_pod_is_the_deployments_pod_with_its_shard() -> None:
    # Resources, probes, security, secrets: the same as the single exporter's, in one place
    # to review; the only additions are the shard's arguments and the variable they read.
    shard_pod = copy.deepcopy(SHARD_POD)
    (container,) = shard_pod["spec"]["containers"]
    del container["args"]
    container["env"] = [entry for entry in container["env"] if entry["name"] != "POD_INDEX"]
    assert shard_pod == POD


def test_the_headless_service_names_each_shard_and_the_service_monitor_scrapes_it() -> None:
    spec = HEADLESS_SERVICE["spec"]
    assert HEADLESS_SERVICE["kind"] == "Service" and spec["clusterIP"] == "None"
    assert STATEFULSET["spec"]["serviceName"] == HEADLESS_SERVICE["metadata"]["name"]
    assert spec["selector"] and spec["selector"].items() <= SHARD_POD["metadata"]["labels"].items()
    match_labels = STATEFULSET["spec"]["selector"]["matchLabels"]
    assert match_labels and match_labels.items() <= SHARD_POD["metadata"]["labels"].items()
    # The same name and port as the single exporter's Service: the ServiceMonitor and the
    # rules' job="ucdn-prefetch-exporter" hold for both.
    assert HEADLESS_SERVICE["metadata"]["name"] == SERVICE["metadata"]["name"]
    assert spec["ports"] == SERVICE["spec"]["ports"]
    monitor_labels = SERVICE_MONITOR["spec"]["selector"]["matchLabels"]
    assert monitor_labels.items() <= HEADLESS_SERVICE["metadata"]["labels"].items()


# --- prometheus-operator -------------------------------------------------------------------


def test_service_monitor_scrapes_the_service() -> None:
    match_labels = SERVICE_MONITOR["spec"]["selector"]["matchLabels"]
    assert match_labels and match_labels.items() <= SERVICE["metadata"]["labels"].items()
    (endpoint,) = SERVICE_MONITOR["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in SERVICE["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_prometheus_rule_carries_the_shipped_rules() -> None:
    rules = documents(ROOT / "prometheus" / "rules.yml")[0]
    assert rules["groups"], "prometheus/rules.yml has no group"
    assert PROMETHEUS_RULE["spec"]["groups"] == rules["groups"]


def test_generator_check_passes_on_the_committed_manifest() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_generator_check_fails_on_a_stale_manifest(tmp_path: Path) -> None:
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text((KUBERNETES / "prometheusrule.yaml").read_text() + "# edited by hand\n")
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "out of date" in result.stderr


def test_rules_name_the_job_prometheus_operator_gives_the_service() -> None:
    # prometheus-operator names a ServiceMonitor's job after the Service (no jobLabel set).
    assert "jobLabel" not in SERVICE_MONITOR["spec"]
    text = (ROOT / "prometheus" / "rules.yml").read_text(encoding="utf-8")
    jobs = set(re.findall(r'\bup\{job="([^"]+)"\}', text))
    assert jobs == {SERVICE["metadata"]["name"]}


# --- secrets and setting names -------------------------------------------------------------


def known_setting_names() -> set[str]:
    """Every environment variable name the exporter's Settings reads."""
    names = {SECRETS_DIR_SETTING}
    for name, info in Settings.model_fields.items():
        names.add(env_name(name))
        if isinstance(info.validation_alias, AliasChoices):
            names |= {str(choice) for choice in info.validation_alias.choices}
    return names


def env_example() -> dict[str, str]:
    """The env file's assignments, commented-out examples included."""
    pairs = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    return dict(pairs)


def test_secret_template_holds_placeholders_only() -> None:
    values = SECRET["stringData"]
    assert "data" not in SECRET
    assert values and all(PLACEHOLDER.fullmatch(v) for v in values.values()), values
    volumes = {v["name"]: v for v in POD["spec"]["volumes"]}
    assert any(
        v.get("secret", {}).get("secretName") == SECRET["metadata"]["name"]
        for v in volumes.values()
    )


def test_env_example_holds_no_real_key() -> None:
    keys = {k: v for k, v in env_example().items() if k.endswith("_KEY")}
    assert keys and all(PLACEHOLDER.fullmatch(v) for v in keys.values()), keys


def test_every_setting_name_is_real() -> None:
    used = {entry["name"] for entry in CONTAINER["env"]}
    used |= set(SECRET["stringData"]) | set(env_example())
    assert used, "no setting is named anywhere"
    assert all(name.startswith(ENV_PREFIX) for name in used), used
    assert used <= known_setting_names(), used - known_setting_names()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No exporter settings from the machine running the tests leak into a test."""
    for key in list(os.environ):
        if key.startswith((ENV_PREFIX, "UCLOUD_")):
            monkeypatch.delenv(key)
    yield monkeypatch


def test_secret_files_are_read_from_the_secrets_dir(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The pod's layout: the Secret's keys as files in the directory its env names.
    for key, value in SECRET["stringData"].items():
        (tmp_path / key).write_text(value)
    for entry in CONTAINER["env"]:
        clean_environment.setenv(entry["name"], entry["value"])
    (mount,) = [m for m in CONTAINER["volumeMounts"] if m["name"] == "secrets"]
    assert os.environ[SECRETS_DIR_SETTING] == mount["mountPath"]
    clean_environment.setenv(SECRETS_DIR_SETTING, str(tmp_path))
    settings = load_settings()
    assert settings.public_key == SECRET["stringData"]["UCDN_EXPORTER_PUBLIC_KEY"]
    expected_private = SECRET["stringData"]["UCDN_EXPORTER_PRIVATE_KEY"]
    assert settings.private_key.get_secret_value() == expected_private


def test_env_example_is_a_valid_configuration(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv(SECRETS_DIR_SETTING, str(tmp_path))  # empty: keys from the file
    active = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    for key, value in active:
        clean_environment.setenv(key, value)
    settings = load_settings()
    assert settings.listen_host_port[1] == DEFAULT_PORT
    assert settings.public_key == dict(active)["UCDN_EXPORTER_PUBLIC_KEY"]


# --- systemd -------------------------------------------------------------------------------


def unit_entries() -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd keys may repeat)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize(("key", "value"), HARDENING.items())
def test_unit_is_hardened(key: str, value: str) -> None:
    assert unit_entries()[f"Service.{key}"] == [value]


def test_unit_filters_system_calls() -> None:
    filters = unit_entries()["Service.SystemCallFilter"]
    assert filters[0] == "@system-service"
    denied = filters[1:]
    assert denied and all(f.startswith("~") for f in denied), filters


def test_unit_runs_the_console_script_with_an_environment_file() -> None:
    entries = unit_entries()
    (exec_start,) = entries["Service.ExecStart"]
    assert Path(exec_start.split()[0]).name == CONSOLE_SCRIPT
    (env_file,) = entries["Service.EnvironmentFile"]
    assert Path(env_file).name == ENV_EXAMPLE.name.removesuffix(".example")
    # An invalid setting exits 2; restarting cannot fix it.
    assert entries["Service.RestartPreventExitStatus"] == ["2"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_accepts_every_directive(tmp_path: Path) -> None:
    # verify needs an executable ExecStart; the console script is not installed here.
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text(), flags=re.M)
    text = re.sub(r"^EnvironmentFile=.*$", f"EnvironmentFile={ENV_EXAMPLE}", text, flags=re.M)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Unknown" not in output and "Invalid" not in output, output
