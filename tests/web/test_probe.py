"""``/probe`` end to end: the exporter as a process, the simulated API on loopback.

A configured target answers with its own series only, and costs requests for that target
only. Anything else is 400 and never reaches the API: user-supplied values must not
become upstream calls; each refusal is checked in process in test_app.py, one here
over real HTTP. ``/metrics`` keeps serving every target, with the runtime metrics.
"""

import time
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import exporter_args, url_entry
from exposition import samples, value
from faultkit import Exporter
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION, REFRESH_ACTION
from exporter.simulator.protocol import Target, Task
from exporter.simulator.static import StaticDataset

pytestmark = pytest.mark.e2e

NOW = int(time.time())  # the exporter's window ends at its own wall clock
STATUSES = ("success", "failure", "process", "wait", "unknow")
TARGETS: dict[Target, int] = {("org-a", False): 7, ("org-a", True): 4, ("org-b", False): 9}
Start = Callable[..., Exporter]


def tasks_for(target: Target, count: int) -> list[Task]:
    project, dcdn = target
    tasks = []
    for index in range(count):
        status = STATUSES[index % len(STATUSES)]
        created = NOW - 60 * (index + 1)
        url = url_entry(
            f"https://cdn.example.com/{project}/{dcdn}/{index}.bin",
            status,
            created,
            finish=created + 30 if status in ("success", "failure") else 0,
            progress=100 if status == "success" else 50,
        )
        tasks.append(
            {"TaskId": f"{project}-{dcdn}-{index}", "CreateTime": created, "Status": status,
             "UrlLists": [url]}
        )  # fmt: skip
    return tasks


@pytest.fixture
def api(simulator: Callable[..., SimulatedApi]) -> SimulatedApi:
    return simulator(StaticDataset({t: tasks_for(t, n) for t, n in TARGETS.items()}))


@pytest.fixture
def exporter(api: SimulatedApi, start_exporter: Start) -> Exporter:
    # org-b on dcdn is a configured target with no tasks: it must answer, with zeros.
    return start_exporter(
        *exporter_args(api, "--project-ids", "org-a,org-b", "--platforms", "cdn,dcdn",
                       "--page-size", "3")
    )  # fmt: skip


def target_labels(text: str) -> set[tuple[str, str]]:
    """The targets whose series the answer has (per-project quota series have no platform)."""
    return {
        (dict(labels)["project_id"], dict(labels)["platform"])
        for (_, labels) in samples(text)
        if "platform" in dict(labels)
    }


@pytest.mark.parametrize(("project", "platform"), [("org-a", "dcdn"), ("org-b", "cdn")])
def test_a_configured_target_answers_with_only_its_series(
    api: SimulatedApi, exporter: Exporter, project: str, platform: str
) -> None:
    api.reset_log()
    response = exporter.get(f"probe?project_id={project}&platform={platform}")
    assert response.status_code == 200
    assert target_labels(response.text) == {(project, platform)}
    parsed = samples(response.text)
    target = (project, platform == "dcdn")
    expected = Counter(
        "unknown" if t["Status"] == "unknow" else t["Status"]
        for t in tasks_for(target, TARGETS[target])
    )
    for status in ("success", "failure", "process", "wait", "unknown"):
        got = value(parsed, "ucdn_prefetch_tasks", project_id=project, platform=platform,
                    status=status)  # fmt: skip
        assert got == expected[status]
    assert value(parsed, "ucdn_prefetch_up", project_id=project, platform=platform) == 1
    # Only this target's pages were asked for (page size 3: several of them), of both kinds.
    kinds = (PREFETCH_ACTION, REFRESH_ACTION)
    asked = {(r.target, r.action) for r in api.requests if r.action in kinds}
    assert asked == {((project, platform == "dcdn"), action) for action in kinds}
    assert api.request_count(project, platform == "dcdn", action=PREFETCH_ACTION) >= 2
    assert not any(name.startswith("process_") for name, _ in parsed)  # runtime: /metrics only


def test_a_configured_target_with_no_tasks_answers_zeros(
    api: SimulatedApi, exporter: Exporter
) -> None:
    response = exporter.get("probe?project_id=org-b&platform=dcdn")
    assert response.status_code == 200
    parsed = samples(response.text)
    assert value(parsed, "ucdn_prefetch_up", project_id="org-b", platform="dcdn") == 1
    assert (
        value(parsed, "ucdn_prefetch_tasks", project_id="org-b", platform="dcdn", status="success")
        == 0
    )
    # One request per kind: the answers are empty, one page each.
    assert api.request_count("org-b", True) == 2


def test_a_refused_probe_is_400_over_http_and_never_reaches_the_api(
    api: SimulatedApi, exporter: Exporter
) -> None:
    # Every refusal, exactly, is in test_app_wsgi.py (in process); this one checks the way
    # through the real server.
    api.reset_log()
    response = exporter.get("probe?project_id=org-a&project_id=org-a&platform=cdn")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "project_id=org-a&platform=dcdn" in response.text  # says what is allowed
    assert api.request_count() == 0


def test_metrics_is_unaffected_by_probes(api: SimulatedApi, exporter: Exporter) -> None:
    for query in ("project_id=org-z&platform=cdn", "project_id=org-a&platform=cdn"):
        exporter.get(f"probe?{query}")
    api.reset_log()
    response = exporter.get("metrics")
    assert response.status_code == 200
    configured = {(p, f) for p in ("org-a", "org-b") for f in ("cdn", "dcdn")}
    assert target_labels(response.text) == configured
    parsed = samples(response.text)
    for project, platform in configured:
        assert value(parsed, "ucdn_prefetch_up", project_id=project, platform=platform) == 1
    kinds = (PREFETCH_ACTION, REFRESH_ACTION)
    asked = {r.target for r in api.requests if r.action in kinds}
    assert asked == {(p, f == "dcdn") for p, f in configured}
    assert any(name.startswith("process_") for name, _ in parsed)
