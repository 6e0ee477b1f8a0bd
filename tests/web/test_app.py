"""The WSGI app in process: every route, method and ``/probe`` refusal, exactly.

ExporterApp is called as a WSGI server would call it, with an environ dict built by
``wsgiref.util.setup_testing_defaults``; its collector talks to the simulated API on
loopback, so a scrape is a real one and the simulator's request log tells whether a
refused probe reached the API. The same checks over real HTTP, with the exporter as a
process, are in test_probe.py (e2e).
"""

import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import url_entry
from exposition import samples, value
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from pydantic import SecretStr

from exporter.gateway.api_client import ApiClient
from exporter.gateway.deadline import Deadline
from exporter.gateway.transport import ClientOptions
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.config import Settings
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset
from exporter.version import __version__
from exporter.web.app import ExporterApp, ScrapeTimeouts

NOW = 1_790_000_000
TEXT = "text/plain; charset=utf-8"
# What Prometheus gets without an Accept header, and when it asks for OpenMetrics.
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
OPENMETRICS_UTF8 = (
    "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
)
TEXT_1_0_0_UTF8 = "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
# The Accept headers Prometheus sends, with scrape_protocols and the escaping scheme at
# their defaults. Prometheus 2.42 to 2.48: scrape/scrape.go, the constant scrapeAcceptHeader.
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# Prometheus 3.0 to 3.3: scrape/scrape.go, acceptHeader() over config.DefaultScrapeProtocols
# (config/config.go's ScrapeProtocolsHeaders), each with ";escaping=allow-utf-8" under the
# default UTF-8 name validation (its text/plain;version=1.0.0 already carries one).
PROMETHEUS_3_0 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2"
)
# Prometheus 3.4 and later: scrape/scrape.go, acceptHeader(), escaping only on the 1.0.0
# formats; spelled out in scrape/scrape_test.go's TestAcceptHeader of 3.5 and 3.14, with
# the default escaping scheme (allow-utf-8), then with metric_name_escaping_scheme
# underscores.
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_3_UNDERSCORES = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
TARGETS = [
    Target("org-a", "cdn"),
    Target("org-a", "dcdn"),
    Target("org-b", "cdn"),
    Target("org-b", "dcdn"),  # configured, with no tasks: it answers zeros
]
ALLOWED = (
    "unknown target: configured targets are project_id=org-a&platform=cdn, "
    "project_id=org-a&platform=dcdn, project_id=org-b&platform=cdn, "
    "project_id=org-b&platform=dcdn\n"
)


def task(task_id: str, status: str) -> dict[str, Any]:
    created = NOW - 600
    url = url_entry(f"https://cdn.example.com/{task_id}.bin", status, created, created + 30, 100)
    return {"TaskId": task_id, "CreateTime": created, "Status": status, "UrlLists": [url]}


DATASET = {
    ("org-a", False): [task("a1", "success"), task("a2", "success"), task("a3", "failure")],
    ("org-a", True): [task("ad1", "failure")],
    ("org-b", False): [task("b1", "success")],
}


@dataclass(frozen=True)
class Answer:
    """What the app handed to start_response, and the body it returned."""

    status: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@pytest.fixture(scope="module")
def api() -> Iterator[SimulatedApi]:
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, StaticDataset(DATASET)) as started:
        yield started


@pytest.fixture(scope="module")
def app(api: SimulatedApi) -> Iterator[ExporterApp]:
    client = ApiClient(
        api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions(page_size=2)
    )
    collector = UcdnCollector(client, TARGETS, wall_clock=lambda: NOW)
    # A stand-in for the process and GC collectors: one series only /metrics and
    # /exporter-metrics may carry.
    runtime = CollectorRegistry()
    Gauge("runtime_marker", "Stands in for the runtime metrics.", registry=runtime).set(1)
    yield ExporterApp(collector, runtime=runtime)
    collector.close()
    client.close()


def call(
    app: ExporterApp, path: str, query: str = "", method: str = "GET", **headers: str
) -> Answer:
    """One request; ``headers`` by their environ names without ``HTTP_`` (``ACCEPT``)."""
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": method}
    environ.update({f"HTTP_{name}": content for name, content in headers.items()})
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, sent: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, sent))
        return lambda data: None

    body = b"".join(app(environ, start_response))
    [(status, sent)] = started
    return Answer(status, dict(sent), body)


def targets_in(text: str) -> set[tuple[str, str]]:
    return {
        (dict(labels)["project_id"], dict(labels)["platform"])
        for _, labels in samples(text)
        if "platform" in dict(labels)  # a project's own series (quotas, info) have none
    }


def test_metrics_serves_every_target_and_the_runtime_series(app: ExporterApp) -> None:
    answer = call(app, "/metrics")
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == EXPOSITION
    assert answer.headers["Content-Length"] == str(len(answer.body))
    parsed = samples(answer.text)
    assert targets_in(answer.text) == {(t.project_label, t.platform) for t in TARGETS}
    assert value(parsed, "runtime_marker") == 1
    assert value(parsed, "ucdn_prefetch_tasks", project_id="org-a", platform="cdn",
                 status="success") == 2  # fmt: skip
    assert value(parsed, "ucdn_prefetch_tasks", project_id="org-b", platform="dcdn",
                 status="success") == 0  # fmt: skip


# The largest deadline the settings accept: every wait of a scrape must hold it.
LONGEST_SCRAPE = next(
    bound.le
    for bound in Settings.model_fields["max_scrape_timeout_seconds"].metadata
    if hasattr(bound, "le")
)


@pytest.mark.parametrize("header", [None, "1e308", "1e400", "inf", "nan", "-1", "9" * 400])
def test_any_timeout_header_scrapes_within_the_largest_deadline(
    api: SimulatedApi, header: str | None
) -> None:
    timeouts = ScrapeTimeouts(maximum=LONGEST_SCRAPE)
    assert 0 < timeouts.deadline(header).remaining() <= LONGEST_SCRAPE
    client = ApiClient(
        api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), options=ClientOptions()
    )
    collector = UcdnCollector(client, TARGETS, wall_clock=lambda: NOW)
    sent = {} if header is None else {"X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS": header}
    try:
        answer = call(ExporterApp(collector, timeouts=timeouts), "/metrics", **sent)
    finally:
        collector.close()
        client.close()
    assert answer.status == "200 OK"
    assert value(samples(answer.text), "ucdn_prefetch_up", project_id="org-a", platform="cdn") == 1


@pytest.mark.parametrize(("project", "platform"), [("org-a", "dcdn"), ("org-b", "cdn")])
def test_probe_serves_one_target_and_asks_the_api_for_it_only(
    app: ExporterApp, api: SimulatedApi, project: str, platform: str
) -> None:
    api.reset_log()
    answer = call(app, "/probe", f"project_id={project}&platform={platform}")
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == EXPOSITION
    assert targets_in(answer.text) == {(project, platform)}
    parsed = samples(answer.text)
    assert value(parsed, "ucdn_prefetch_up", project_id=project, platform=platform) == 1
    assert value(parsed, "runtime_marker") is None
    assert api.request_count() == api.request_count(project, platform == "dcdn") >= 1


def test_exporter_metrics_serves_the_process_series_and_no_target(
    app: ExporterApp, api: SimulatedApi
) -> None:
    api.reset_log()
    answer = call(app, "/exporter-metrics")
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == EXPOSITION
    assert targets_in(answer.text) == set()
    parsed = samples(answer.text)
    assert value(parsed, "runtime_marker") == 1
    assert value(parsed, "ucdn_prefetch_exporter_build_info", version=__version__) == 1
    assert api.request_count() == 0


@pytest.mark.parametrize("path", ["/-/healthy", "/-/ready"])
def test_health_and_readiness_say_ok_without_the_api(
    app: ExporterApp, api: SimulatedApi, path: str
) -> None:
    api.reset_log()
    answer = call(app, path)
    assert (answer.status, answer.headers, answer.body) == (
        "200 OK",
        {"Content-Type": TEXT, "Content-Length": "3"},
        b"OK\n",
    )
    assert api.request_count() == 0


def test_the_landing_page_links_every_route_and_each_probe(app: ExporterApp) -> None:
    answer = call(app, "/")
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    for link in ("metrics", "exporter-metrics", "-/healthy", "-/ready"):
        assert f'<a href="{link}">' in answer.text
    assert '<a href="probe?project_id=org-b&amp;platform=dcdn">org-b / dcdn</a>' in answer.text
    assert f"Version {__version__}." in answer.text


def test_an_empty_path_is_the_landing_page(app: ExporterApp) -> None:
    assert call(app, "").body == call(app, "/").body


@pytest.mark.parametrize(
    "path", ["/metrics/", "/Metrics", "/probe/x", "/favicon.ico", "//metrics", "/-/", "/%00"]
)
def test_unknown_paths_are_404_and_never_a_scrape(
    app: ExporterApp, api: SimulatedApi, path: str
) -> None:
    api.reset_log()
    answer = call(app, path)
    assert (answer.status, answer.headers, answer.body) == (
        "404 Not Found",
        {"Content-Type": TEXT, "Content-Length": "19"},
        b"404 page not found\n",
    )
    assert api.request_count() == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/metrics", "/probe", "/-/healthy", "/sd", "/"])
def test_other_methods_are_405_with_allow(
    app: ExporterApp, api: SimulatedApi, method: str, path: str
) -> None:
    api.reset_log()
    answer = call(app, path, "project_id=org-a&platform=cdn", method=method)
    assert (answer.status, answer.headers, answer.body) == (
        "405 Method Not Allowed",
        {"Allow": "GET, HEAD", "Content-Length": "0"},
        b"",
    )
    assert api.request_count() == 0


def test_an_unknown_path_is_404_whatever_the_method(app: ExporterApp) -> None:
    assert call(app, "/nope", method="POST").status == "404 Not Found"


def test_head_sends_the_headers_of_get_and_no_body(app: ExporterApp) -> None:
    get, head = call(app, "/-/healthy"), call(app, "/-/healthy", method="HEAD")
    assert head.status == get.status
    assert head.headers == get.headers  # Content-Length too: that of the body not sent
    assert head.body == b""


@pytest.mark.parametrize(
    "query",
    [
        "project_id=org-z&platform=cdn",  # a project not configured
        "project_id=org-a&platform=xcdn",  # a platform that does not exist
        "project_id=ORG-A&platform=cdn",  # labels match exactly
        "project_id=org-a&platform=CDN",
        "project_id=&platform=cdn",  # empty: not the default project unless configured
        "project_id=default&platform=cdn",  # the default project's label, not configured
        "platform=cdn",  # missing: never guessed, even as the default project
        "project_id=org-a",  # missing platform: never guessed, though org-a/cdn exists
        "",
        "project_id=org-a&project_id=org-a&platform=cdn",  # repeated, even if equal
        "project_id=org-a&platform=cdn&platform=dcdn",
        "project_id=org-a%0A&platform=cdn",  # malformed: a newline
        "project_id=org-a%26platform%3Dcdn",  # one parameter holding both
        "project_id=org-a;platform=cdn",  # not a separator
        "project_id=%ZZ&platform=cdn",  # a broken escape
        "project_id=org-a&platform=cdn%00",
        "project_id=org-a &platform=cdn",
    ],
)
def test_every_other_probe_is_400_naming_the_targets_and_never_reaches_the_api(
    app: ExporterApp, api: SimulatedApi, query: str
) -> None:
    api.reset_log()
    answer = call(app, "/probe", query)
    assert (answer.status, answer.headers, answer.text) == (
        "400 Bad Request",
        {"Content-Type": TEXT, "Content-Length": str(len(ALLOWED))},
        ALLOWED,
    )
    assert api.request_count() == 0


def test_openmetrics_is_served_when_asked_for(app: ExporterApp) -> None:
    answer = call(app, "/metrics", ACCEPT="application/openmetrics-text; version=1.0.0")
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == OPENMETRICS
    assert answer.text.endswith("# EOF\n")


def test_gzip_is_served_when_accepted(app: ExporterApp) -> None:
    answer = call(app, "/exporter-metrics", ACCEPT_ENCODING="gzip")
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.headers["Content-Length"] == str(len(answer.body))
    assert value(samples(gzip.decompress(answer.body).decode()), "runtime_marker") == 1
    assert "Content-Encoding" not in call(app, "/exporter-metrics").headers


# A target whose label values need escaping: non-ASCII, a quote, a backslash, a newline.
ODD = Target("org-utf8", "cdn")
ODD_URL = 'https://cdn.example.com/日本/"q"\\x\ny'
ODD_LINE = (
    'ucdn_prefetch_url_progress_ratio{platform="cdn",project_id="org-utf8",task_id="u-ü",'
    'url="https://cdn.example.com/日本/\\"q\\"\\\\x\\ny"} 0.5\n'
)
DURATION = re.compile(r"^(ucdn_prefetch_scrape_duration_seconds\{[^}]*\}) \S+$", re.MULTILINE)
Encoder = Callable[[MetricsSnapshot], bytes]


@pytest.fixture(scope="module")
def cached() -> Iterator[tuple[ExporterApp, Callable[[], list[Metric]]]]:
    """An app whose collector reuses its first answer for an hour, and what that collector
    collects now with the app's runtime series first: the families of the app's scrapes."""
    url = url_entry(ODD_URL, "process", NOW - 60, progress=50)
    odd = {"TaskId": "u-ü", "CreateTime": NOW - 60, "Status": "process", "UrlLists": [url]}
    dataset = StaticDataset({**DATASET, ("org-utf8", False): [odd]})
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset) as api:
        client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
        collector = UcdnCollector(
            client, [*TARGETS, ODD], wall_clock=lambda: NOW, cache_seconds=3600
        )
        runtime = CollectorRegistry()
        Gauge("runtime_marker", "Stands in for the runtime metrics.", registry=runtime).set(1)

        def families() -> list[Metric]:
            return [*runtime.collect(), *collector.collect_within(Deadline.after(10))]

        yield ExporterApp(collector, runtime=runtime), families
        collector.close()
        client.close()


def openmetrics(escaping: str) -> Encoder:
    return lambda snapshot: generate_openmetrics(snapshot, escaping=escaping, version="1.0.0")


@pytest.mark.parametrize(
    ("accept", "content_type", "encoder"),
    [
        (PROMETHEUS_2, OPENMETRICS, openmetrics("underscores")),
        (PROMETHEUS_3_0, OPENMETRICS_UTF8, openmetrics("allow-utf-8")),
        (PROMETHEUS_3, OPENMETRICS_UTF8, openmetrics("allow-utf-8")),
        (PROMETHEUS_3_UNDERSCORES, OPENMETRICS, openmetrics("underscores")),
        ("text/plain", EXPOSITION, generate_latest),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", TEXT_1_0_0_UTF8,
         lambda snapshot: generate_latest(snapshot, escaping="allow-utf-8")),
        (None, EXPOSITION, generate_latest),
    ],
)  # fmt: skip
def test_each_accept_header_gets_prometheus_clients_own_bytes(
    cached: tuple[ExporterApp, Callable[[], list[Metric]]],
    accept: str | None,
    content_type: str,
    encoder: Encoder,
) -> None:
    app, families = cached
    answer = call(app, "/metrics", **({} if accept is None else {"ACCEPT": accept}))
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == content_type
    # The same collection (the cache's), scraped again: only the measured durations differ.
    expected = encoder(MetricsSnapshot(families())).decode()
    assert DURATION.sub(r"\1 <duration>", answer.text) == DURATION.sub(r"\1 <duration>", expected)
    assert ODD_LINE in answer.text  # escaped as prometheus_client escapes a label value
    assert answer.text.endswith("# EOF\n") == content_type.startswith("application/openmetrics")


@given(
    st.one_of(
        st.none(),
        st.text(max_size=20),
        st.sampled_from(["inf", "-inf", "nan", "1e308", "1e400", "-1", "0", "0.1", "1e-300"]),
        st.floats().map(str),
    )
)
def test_no_timeout_header_sets_a_deadline_past_the_maximum(header: str | None) -> None:
    # A deadline beyond what the platform can wait for would fail the scrape later.
    remaining = ScrapeTimeouts(offset=0.5, maximum=30.0).deadline(header).remaining()
    assert 0.0 <= remaining <= 30.0


@pytest.mark.parametrize(("header", "seconds"), [("10", 9.5), ("0.3", 0.0), ("120", 30.0)])
def test_the_timeout_header_less_the_offset_within_the_maximum(header: str, seconds: float) -> None:
    remaining = ScrapeTimeouts(offset=0.5, maximum=30.0).deadline(header).remaining()
    assert seconds - 0.5 < remaining <= seconds


@pytest.mark.parametrize("accept", [PROMETHEUS_3, "text/plain"])
def test_a_gzipped_scrape_is_the_same_bytes_compressed(
    cached: tuple[ExporterApp, Callable[[], list[Metric]]], accept: str
) -> None:
    # Encoded and compressed a family at a time: one gzip member, nothing lost or doubled.
    app, _ = cached
    plain = call(app, "/metrics", ACCEPT=accept)
    zipped = call(app, "/metrics", ACCEPT=accept, ACCEPT_ENCODING="gzip")
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Content-Length"] == str(len(zipped.body))
    unzipped = gzip.decompress(zipped.body).decode()
    assert DURATION.sub(r"\1 <d>", unzipped) == DURATION.sub(r"\1 <d>", plain.text)
    assert unzipped.count("# EOF") == (1 if "openmetrics" in accept else 0)
