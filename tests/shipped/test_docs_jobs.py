"""Every scrape config the repository ships or shows names the job the exporter-down alert
selects, so that a user who copies one gets that alert; each one is a valid Prometheus
configuration; and the sharded /probe setup of docs/scaling.md scrapes what it says it does
when a real Prometheus runs it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import promtool, stop_process
from faultkit import Exporter
from promkit import Prometheus, run_prometheus, wait_for
from test_prometheus_e2e import DEADLINE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "rules.yml"
# Where scrape configs are: the docs' YAML blocks, and the files users copy or mount.
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
CONFIG_FILES = [
    *sorted((ROOT / "prometheus").glob("*.yml")),
    *sorted(path for path in (ROOT / "deploy").rglob("*") if path.suffix in {".yml", ".yaml"}),
]
YAML_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.DOTALL)
JOB_NAME = re.compile(r"^[ \t-]*job_name:[ \t]*[\"']?([^\"'\s#]+)", re.MULTILINE)


def selected_job() -> str:
    """The job the exporter-down alert selects in the shipped rules."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [
        rule["expr"]
        for group in groups
        for rule in group["rules"]
        if rule.get("alert") == "UcdnPrefetchExporterDown"
    ]
    match = re.fullmatch(r'up\{job="([^"]+)"\} == 0', expr.strip())
    assert match, expr
    return match[1]


def doc_blocks() -> list[tuple[str, str]]:
    """(where, text) of every YAML block of the docs that holds a scrape config."""
    return [
        (f"{path.relative_to(ROOT)} block {index}", block)
        for path in DOCS
        for index, block in enumerate(YAML_BLOCK.findall(path.read_text()), start=1)
        if JOB_NAME.search(block)
    ]


def job_names() -> list[tuple[str, str]]:
    """(where, job name) of every scrape job in the docs and the shipped files."""
    sources = doc_blocks() + [
        (str(path.relative_to(ROOT)), path.read_text()) for path in CONFIG_FILES
    ]
    return [(where, name) for where, text in sources for name in JOB_NAME.findall(text)]


def test_every_scrape_job_is_the_one_the_exporter_down_alert_selects() -> None:
    found = job_names()
    where = {place.split(" block")[0] for place, _ in found}
    # The check cannot pass by finding nothing: these all show a scrape config.
    assert where >= {
        "README.md",
        "docs/operating.md",
        "docs/scaling.md",
        "docs/security.md",
        "prometheus/prometheus.yml",
    }
    wrong = [(place, name) for place, name in found if name != selected_job()]
    assert wrong == [], f"the exporter-down alert selects job {selected_job()!r}"


def test_the_service_monitor_job_is_the_selected_one_too() -> None:
    # prometheus-operator names a ServiceMonitor's job after its Service (no jobLabel).
    kubernetes = ROOT / "deploy" / "kubernetes"
    monitor = yaml.safe_load((kubernetes / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((kubernetes / "service.yaml").read_text())
    assert "jobLabel" not in monitor["spec"]
    assert service["metadata"]["name"] == selected_job()


@pytest.mark.system
@pytest.mark.parametrize(("where", "block"), doc_blocks(), ids=[w for w, _ in doc_blocks()])
def test_every_scrape_config_of_the_docs_is_valid(where: str, block: str, tmp_path: Path) -> None:
    config: Any = yaml.safe_load(block)
    if isinstance(config, list):  # a bare list of jobs, to go under scrape_configs:
        config = {"scrape_configs": config}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    # --syntax-only: the docs name files (CA, password) that exist on the user's machine.
    result = promtool("check", "config", "--syntax-only", str(path))
    assert result.returncode == 0, f"{where}: {result.stdout}{result.stderr}"


def scaling_config(exporter: str) -> dict[str, Any]:
    """docs/scaling.md's /probe job of replicas behind a Service (its statically listed
    targets), with its addresses pointed at ``exporter``, as the one Prometheus shard of one."""
    (block,) = [
        b
        for where, b in doc_blocks()
        if "scaling.md" in where and "/probe" in b and "static_configs" in b and "_sd_" not in b
    ]
    config: dict[str, Any] = yaml.safe_load(block)
    (job,) = config["scrape_configs"]
    probes, replicas = job["static_configs"]
    assert probes["labels"] == {"__metrics_path__": "/probe"}
    assert replicas["labels"] == {"__metrics_path__": "/exporter-metrics"}
    replicas["targets"] = [exporter]
    for rule in job["relabel_configs"]:
        if rule.get("action") == "hashmod":
            rule["modulus"] = 1
        if rule.get("target_label") == "__address__":
            rule["replacement"] = exporter
    job.update(scrape_interval="2s", scrape_timeout="2s")
    return config


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus running docs/scaling.md's job against the demo exporter."""
    directory = tmp_path_factory.mktemp("prometheus-scaling")
    exporter = Exporter(
        ["--demo", "--project-ids", "org-abc,org-def", "--platforms", "cdn,dcdn"]
    ).wait_started(timeout=30)
    process, prometheus = run_prometheus(directory, scaling_config(f"127.0.0.1:{exporter.port}"))
    try:

        def all_scraped() -> bool:
            targets = prometheus.api("targets")["activeTargets"]
            return len(targets) == 4 and all(t["health"] == "up" for t in targets)

        wait_for(
            "every target scraped", all_scraped, prometheus, time.monotonic() + DEADLINE_SECONDS
        )
        yield prometheus
    finally:
        stop_process(process)
        exporter.stop()


@pytest.mark.system
def test_the_sharded_job_probes_each_target_and_scrapes_each_replica_once(
    sharded: Prometheus,
) -> None:
    targets = sharded.api("targets")["activeTargets"]
    assert {t["labels"]["job"] for t in targets} == {selected_job()}
    paths = {t["labels"]["instance"]: t["scrapeUrl"].split("/", 3)[3] for t in targets}
    replica = next(name for name in paths if ":" in name)
    assert paths == {
        "org-abc/cdn": "probe?platform=cdn&project_id=org-abc",
        "org-abc/dcdn": "probe?platform=dcdn&project_id=org-abc",
        "org-def/cdn": "probe?platform=cdn&project_id=org-def",
        replica: "exporter-metrics",
    }


@pytest.mark.system
def test_each_series_comes_once_from_where_the_doc_says(sharded: Prometheus) -> None:
    def instances(expr: str) -> list[str]:
        return sorted(series["metric"]["instance"] for series in sharded.query(expr))

    assert instances("ucdn_prefetch_up") == ["org-abc/cdn", "org-abc/dcdn", "org-def/cdn"]
    # A project's quota series come with its first target in platform order.
    assert instances("ucdn_domain_quota_up") == ["org-abc/cdn", "org-def/cdn"]
    (replica,) = instances("ucdn_prefetch_exporter_build_info")
    assert ":" in replica
    # The exporter-down alert sees every probe and the replica.
    assert len(instances(f'up{{job="{selected_job()}"}} == 1')) == 4
