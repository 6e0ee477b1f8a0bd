"""The landing page and ``/sd``, read from a targets' catalogue: every target listed, every value
escaped, Prometheus' HTTP SD format, the Host header checked, the same auth as ``/metrics``,
and never a request to the gateway.

The catalogue here is :class:`ListedCatalogue`, the simplest implementation of the
``TargetCatalogue`` protocol (a frozen record of entries, statuses and discoveries), so each
test chooses exactly what the page has to show. The collector behind the app talks to the
simulated API on loopback, whose request log proves that neither page reached it.
"""

import dataclasses
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import bcrypt
import pytest
import requests
from conftest import started
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from exporter.collection.catalogue import (
    Account,
    Catalogue,
    DiscoveryState,
    TargetCatalogue,
    TargetEntry,
    TargetStatus,
)
from exporter.collection.discovery import AccountProjects
from exporter.gateway.api_client import ApiClient
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.simulator.protocol import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from exporter.simulator.server import SimulatedApi
from exporter.simulator.static import StaticDataset
from exporter.web.app import ExporterApp
from exporter.web.server import WebServer
from exporter.web.web_config import load_web_config

NOW = 1_790_000_000.0
HOST = "ucdn-prefetch-exporter-1.ucdn-prefetch-exporter.monitoring.svc:9866"
DEFAULT = TargetEntry(Target("", "cdn"), "default", "Default project")
SHOP_CDN = TargetEntry(Target("org-shop", "cdn"), "main", "shop")
SHOP_DCDN = TargetEntry(Target("org-shop", "dcdn"), "main", "shop")
BLOG = TargetEntry(Target("org-blog", "cdn"), "second", "")
PROJECTS_LISTED = ("", "org-blog", "org-shop")


@dataclass(frozen=True)
class ListedCatalogue:
    """A ``TargetCatalogue`` that holds what it shows: no collector, no discovery behind it."""

    listed: tuple[TargetEntry, ...] = ()
    collections: tuple[TargetStatus, ...] = ()
    accounts: tuple[DiscoveryState, ...] = ()
    shard_of_total: tuple[int, int] = (0, 1)

    @property
    def shard(self) -> tuple[int, int]:
        return self.shard_of_total

    def entries(self) -> list[TargetEntry]:
        return list(self.listed)

    def statuses(self) -> list[TargetStatus]:
        return list(self.collections)

    def discoveries(self) -> list[DiscoveryState]:
        return list(self.accounts)


CATALOGUE = ListedCatalogue(
    listed=(DEFAULT, BLOG, SHOP_CDN, SHOP_DCDN),
    collections=(
        TargetStatus(DEFAULT, "prefetch", NOW - 12.4, NOW - 12.4, None, 3),
        TargetStatus(DEFAULT, "refresh", NOW - 30, NOW - 90, "timeout", 7),
        TargetStatus(BLOG, "prefetch", None, None, None, 0),
        TargetStatus(SHOP_CDN, "prefetch", NOW - 5, NOW - 5, None, 2),
        TargetStatus(SHOP_DCDN, "prefetch", None, None, None, 0),
    ),
    accounts=(
        DiscoveryState("main", "auto", 1, NOW - 60, NOW - 60, None),
        DiscoveryState("second", "auto", 1, NOW - 10, NOW - 3600, "RetCode 299: no permission"),
        DiscoveryState("default", "list", 1, None, None, None),
    ),
    shard_of_total=(1, 3),
)
# Every row of the targets' table, as a reader sees it.
TARGET_ROWS = [
    ["prefetch", "default", "Default project", "cdn", "default", "ok", "12", "12", "", "3"],
    [
        "refresh",
        "default",
        "Default project",
        "cdn",
        "default",
        "failed",
        "30",
        "90",
        "timeout",
        "7",
    ],
    ["prefetch", "org-blog", "", "cdn", "second", "never", "never", "never", "", "0"],
    ["prefetch", "org-shop", "shop", "cdn", "main", "ok", "5", "5", "", "2"],
    ["prefetch", "org-shop", "shop", "dcdn", "main", "never", "never", "never", "", "0"],
]
DISCOVERY_ROWS = [
    ["main", "discovered", "1", "60", ""],
    ["second", "discovered", "1", "3600", "RetCode 299: no permission"],
    ["default", "listed", "1", "", ""],
]
PAGE_TAGS = {"html", "head", "meta", "title", "body", "h1", "h2", "p", "ul", "li", "a", "code"}
PAGE_TAGS |= {"table", "tr", "th", "td"}


class PageReader(HTMLParser):
    """The page's tags and its tables' cells, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def read_page(text: str) -> PageReader:
    reader = PageReader()
    reader.feed(text)
    reader.close()
    return reader


@dataclass(frozen=True)
class Answer:
    status: str
    headers: dict[str, str]
    body: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.body.decode()


def call(app: ExporterApp, path: str, **headers: str) -> Answer:
    """One GET; ``headers`` by their environ names without ``HTTP_`` (``HOST``)."""
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": "", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ.pop("HTTP_HOST", None)  # only the Host a test sends
    environ.update({f"HTTP_{name}": content for name, content in headers.items()})
    environ["wsgi.input"] = io.BytesIO()
    started_with: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, sent: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started_with.append((status, sent))
        return lambda data: None

    body = b"".join(app(environ, start_response))
    [(status, sent)] = started_with
    return Answer(status, dict(sent), body)


@pytest.fixture(scope="module")
def api() -> Iterator[SimulatedApi]:
    with SimulatedApi(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, StaticDataset({})) as started_api:
        yield started_api


@pytest.fixture(scope="module")
def collector(api: SimulatedApi) -> Iterator[UcdnCollector]:
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
    targets = [entry.target for entry in CATALOGUE.listed]
    made = UcdnCollector(client, targets, wall_clock=lambda: NOW)
    yield made
    made.close()
    client.close()


def app_with(
    collector: UcdnCollector, catalogue: TargetCatalogue | None, **options: Any
) -> ExporterApp:
    return ExporterApp(collector, catalogue=catalogue, wall_clock=lambda: NOW, **options)


# --- the landing page ----------------------------------------------------------------------


def test_the_page_lists_every_target_and_kind_with_its_last_collection(
    collector: UcdnCollector, api: SimulatedApi
) -> None:
    api.reset_log()
    answer = call(app_with(collector, CATALOGUE), "/")
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    targets, discoveries = read_page(answer.text).tables
    assert targets[1:] == TARGET_ROWS
    assert discoveries[1:] == DISCOVERY_ROWS
    assert "<h2>Targets (4)</h2>" in answer.text
    assert "Shard 1 of 3 (shards 0 to 2)" in answer.text
    assert api.request_count() == 0  # the catalogue only, never the gateway


def test_the_page_keeps_its_links_and_says_when_it_is_not_sharded(
    collector: UcdnCollector,
) -> None:
    unsharded = dataclasses.replace(CATALOGUE, shard_of_total=(0, 1))
    text = call(app_with(collector, unsharded), "/").text
    for link in ("metrics", "exporter-metrics", "sd", "-/healthy", "-/ready"):
        assert f'<a href="{link}">' in text
    assert '<a href="probe?project_id=org-shop&amp;platform=dcdn">org-shop / dcdn</a>' in text
    assert "Not sharded" in text


def test_a_replica_without_targets_or_accounts_says_so(collector: UcdnCollector) -> None:
    text = call(app_with(collector, ListedCatalogue()), "/").text
    assert "<h2>Targets (0)</h2>\n<p>No target yet.</p>" in text
    assert "<p>No account.</p>" in text


def test_without_a_catalogue_the_pages_show_the_collectors(api: SimulatedApi) -> None:
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
    fresh = UcdnCollector(client, [entry.target for entry in CATALOGUE.listed])
    api.reset_log()
    app = app_with(fresh, None)
    targets, discoveries = read_page(call(app, "/").text).tables
    expected = sorted(entry.target for entry in CATALOGUE.listed)
    assert [row[1:5] for row in targets[1:]] == [
        [target.project_label, "", target.platform, "default"] for target in expected
    ]
    assert {row[5] for row in targets[1:]} == {"never"}  # nothing collected yet
    assert discoveries[1:] == [["default", "listed", str(len(PROJECTS_LISTED)), "", ""]]
    groups = json.loads(call(app, "/sd", HOST=HOST).body)
    assert [g["labels"]["__param_project_id"] for g in groups] == [
        target.project_label for target in expected
    ]
    assert api.request_count() == 0
    fresh.close()
    client.close()


def test_the_page_never_runs_a_due_discovery_and_sd_does(
    collector: UcdnCollector, api: SimulatedApi
) -> None:
    client = ApiClient(api.url, DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY))
    projects = AccountProjects("main", client, None)  # discovered, and due from the start
    catalogue = Catalogue([Account(projects, ("cdn",), client)], discovery_seconds=5)
    try:
        api.reset_log()
        assert call(app_with(collector, catalogue), "/").status == "200 OK"
        assert api.request_count() == 0
        call(app_with(collector, catalogue), "/sd", HOST=HOST)
        assert api.request_count(action="GetProjectList") == 1
    finally:
        client.close()


HOSTILE = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("<>&\"'/"),
    max_size=40,
)


@given(name=HOSTILE, account=HOSTILE, reason=HOSTILE, error=HOSTILE)
def test_every_value_is_escaped(
    collector: UcdnCollector, name: str, account: str, reason: str, error: str
) -> None:
    entry = TargetEntry(Target("org-x", "cdn"), account, name)
    catalogue = ListedCatalogue(
        listed=(entry,),
        collections=(TargetStatus(entry, "prefetch", NOW - 1, NOW - 9, reason or "x", 1),),
        accounts=(DiscoveryState(account, "auto", 1, NOW, None, error),),
    )
    reader = read_page(call(app_with(collector, catalogue), "/").text)
    # Whatever the values hold, the page has its own tags only and each cell reads back
    # exactly the value it shows.
    assert reader.tags <= PAGE_TAGS
    [_, row], [_, discovery] = reader.tables
    assert row == [
        "prefetch",
        "org-x",
        name,
        "cdn",
        account,
        "failed",
        "1",
        "9",
        reason or "x",
        "1",
    ]
    assert discovery == [account, "discovered", "1", "never", error]


def test_markup_in_a_value_is_shown_as_text(collector: UcdnCollector) -> None:
    entry = TargetEntry(Target("org-x", "cdn"), 'a"><script>alert(1)</script>', "<b>shop</b>")
    status = TargetStatus(entry, "prefetch", None, None, None, 0)
    catalogue = ListedCatalogue(listed=(entry,), collections=(status,))
    text = call(app_with(collector, catalogue), "/").text
    assert "<script" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;shop&lt;/b&gt;" in text


# --- /sd -----------------------------------------------------------------------------------


def test_sd_lists_each_target_of_this_replica_for_probe(
    collector: UcdnCollector, api: SimulatedApi
) -> None:
    api.reset_log()
    answer = call(app_with(collector, CATALOGUE), "/sd", HOST=HOST)
    assert answer.status == "200 OK"
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == [
        {"targets": [HOST], "labels": {"__param_project_id": project, "__param_platform": p}}
        for project, p in [
            ("default", "cdn"),
            ("org-blog", "cdn"),
            ("org-shop", "cdn"),
            ("org-shop", "dcdn"),
        ]
    ]
    assert api.request_count() == 0


def test_sd_of_a_replica_without_targets_is_an_empty_list(collector: UcdnCollector) -> None:
    answer = call(app_with(collector, ListedCatalogue()), "/sd", HOST=HOST)
    assert (answer.status, answer.body) == ("200 OK", b"[]")


@pytest.mark.parametrize("host", ["127.0.0.1:9866", "[::1]:9866", "exporter", "a.b-c.example:1"])
def test_sd_addresses_targets_as_the_request_reached_it(
    collector: UcdnCollector, host: str
) -> None:
    answer = call(app_with(collector, CATALOGUE), "/sd", HOST=host)
    assert answer.status == "200 OK"
    assert {address for g in json.loads(answer.body) for address in g["targets"]} == {host}


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        'evil"],"labels":{"x":"y"}}]',
        "exporter:9866/probe",
        "user@exporter:9866",
        "exporter:0",
        "exporter:65536",
        "exporter:",
        "exporter :9866",
        "-exporter:9866",
        "[::1:9866",
        "ex\u00e4mple:9866",
    ],
)
def test_sd_refuses_a_host_header_that_is_no_scrape_address(
    collector: UcdnCollector, host: str | None
) -> None:
    headers = {} if host is None else {"HOST": host}
    answer = call(app_with(collector, CATALOGUE), "/sd", **headers)
    assert answer.status == "400 Bad Request"
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert b"org-shop" not in answer.body


def test_a_configured_sd_address_wins_over_the_host_header(collector: UcdnCollector) -> None:
    app = app_with(collector, CATALOGUE, sd_address="exporter-0.exporters:9866")
    for headers in ({"HOST": HOST}, {}):
        groups = json.loads(call(app, "/sd", **headers).body)
        assert {a for g in groups for a in g["targets"]} == {"exporter-0.exporters:9866"}


@pytest.mark.parametrize("address", ["", "exporter:99999", "http://exporter:9866"])
def test_a_configured_sd_address_is_checked_at_start(
    collector: UcdnCollector, address: str
) -> None:
    with pytest.raises(ValueError, match="host:port"):
        app_with(collector, CATALOGUE, sd_address=address)


# --- the same auth as /metrics -------------------------------------------------------------


PASSWORD_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def test_the_page_and_sd_need_the_password_of_metrics(
    serve: list[WebServer], collector: UcdnCollector, tmp_path: Path
) -> None:
    config_file = tmp_path / "web.yml"
    config_file.write_text(f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n")
    app = app_with(collector, CATALOGUE)
    server = started(serve, WebServer(app, "127.0.0.1", 0, web_config=load_web_config(config_file)))
    for path in ("", "sd", "metrics"):
        refused: Sequence[requests.Response] = [
            requests.get(server.url + path, timeout=10),
            requests.get(server.url + path, auth=("prometheus", "wrong"), timeout=10),
        ]
        for answer in refused:
            assert answer.status_code == 401, path
            assert "org-shop" not in answer.text, path
        allowed = requests.get(server.url + path, auth=("prometheus", "s3cret"), timeout=10)
        assert allowed.status_code == 200, path
        assert "org-shop" in allowed.text, path
