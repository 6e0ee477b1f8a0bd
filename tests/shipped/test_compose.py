"""The demo stack in deploy/compose: everything it mounts exists, and the configuration
each service reads parses. No Docker engine is needed: the files are checked as files."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from conftest import promtool

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"


def services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def mounts(service: str) -> dict[PurePosixPath, Path]:
    """Container path -> host path of a service's bind mounts (short syntax)."""
    found = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        found[PurePosixPath(target)] = (COMPOSE_DIR / source).resolve()
    return found


def host_path(service: str, container_path: str) -> Path:
    """The host file behind a container path, through a file or a directory mount."""
    wanted = PurePosixPath(container_path)
    for target, source in mounts(service).items():
        if wanted == target or target in wanted.parents:
            return source / wanted.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted into {service}")


def test_the_three_services_and_their_ports() -> None:
    found = services()
    assert set(found) == {"exporter", "prometheus", "grafana"}
    assert found["exporter"]["ports"] == ["9866:9866"]
    assert found["prometheus"]["ports"] == ["9090:9090"]
    assert found["grafana"]["ports"] == ["3000:3000"]


def test_the_exporter_is_built_from_the_repository_and_runs_the_demo() -> None:
    exporter = services()["exporter"]
    assert (COMPOSE_DIR / exporter["build"]["context"]).resolve() == ROOT
    assert exporter["build"]["dockerfile"] == "Dockerfile"
    assert "--demo" in exporter["command"]
    environment = exporter["environment"]
    # Loopback inside a container would be unreachable for Prometheus.
    assert environment["UCDN_EXPORTER_LISTEN_ADDRESS"].startswith("0.0.0.0:")
    assert set(environment["UCDN_EXPORTER_PLATFORMS"].split(",")) == {"cdn", "dcdn"}


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_every_mounted_file_exists(service: str) -> None:
    sources = mounts(service).values()
    assert sources
    for source in sources:
        assert source.exists(), source
        assert ROOT in source.parents, f"{source} is outside the repository"


def test_prometheus_scrapes_the_exporter_service() -> None:
    config_file = host_path("prometheus", "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(config_file.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ucdn-prefetch-exporter"
    port = services()["exporter"]["environment"]["UCDN_EXPORTER_LISTEN_ADDRESS"].split(":")[-1]
    assert job["static_configs"][0]["targets"] == [f"exporter:{port}"]
    # The rule file is found next to the config, in the container as in the repository.
    assert config["rule_files"], "Prometheus loads no rule file"
    for rule_file in config["rule_files"]:
        assert host_path("prometheus", f"/etc/prometheus/{rule_file}").is_file()


def test_prometheus_runs_without_feature_flags() -> None:
    # The dashboard needs none (tests/shipped/test_dashboards.py), so the demo asks for none.
    command = services()["prometheus"]["command"]
    assert not [flag for flag in command if flag.startswith("--enable-feature")], command


def test_prometheus_config_passes_promtool() -> None:
    config_file = host_path("prometheus", "/etc/prometheus/prometheus.yml")
    result = promtool("check", "config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_data_source_points_at_the_prometheus_service() -> None:
    directory = host_path("grafana", "/etc/grafana/provisioning/datasources")
    files = sorted(directory.glob("*.yml"))
    assert files
    (source,) = [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True


def test_grafana_dashboard_provider_reads_the_mounted_dashboard() -> None:
    directory = host_path("grafana", "/etc/grafana/provisioning/dashboards")
    (provider_file,) = sorted(directory.glob("*.yml"))
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    dashboard = host_path("grafana", f"{folder}/ucdn-prefetch-overview.json")
    assert dashboard == ROOT / "dashboards" / "ucdn-prefetch-overview.json"
    assert json.loads(dashboard.read_text())["uid"] == "ucdn-prefetch-overview"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home) == dashboard
