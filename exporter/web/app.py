"""The WSGI application: which path serves what, and how long a scrape may take.

``/metrics`` collects every configured target, with the process' own series (build
info, API requests, ``process_*``, ``python_*``): the single-exporter setup.
``/probe?project_id=…&platform=…`` collects one, in the style of blackbox_exporter, so
that Prometheus can spread targets over replicas; it carries that target's series only,
and ``/exporter-metrics`` carries the process' own series only (one job per replica), so
that across the probes and that job each series appears exactly once. ``/sd`` lists this
replica's targets for Prometheus' HTTP service discovery (running a due project discovery
first, as a scrape does). ``/`` shows what each target's last collection did from what the
targets' catalogue knows, and, as ``/-/healthy`` and ``/-/ready``, never calls the upstream
API. Anything else is 404, never a scrape.
"""

import gzip
import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from exporter.collection.catalogue import TargetCatalogue
from exporter.gateway.allocator import give_back_free_memory
from exporter.gateway.deadline import Deadline
from exporter.publish.collector import MetricsSnapshot, UcdnCollector
from exporter.settings.config import setting_default
from exporter.settings.target import Target
from exporter.version import __version__
from exporter.web.service_discovery import scrape_address, sd_document
from exporter.web.status_page import render_status_page

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)
_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
_TEXT = "text/plain; charset=utf-8"
Response = tuple[str, list[tuple[str, str]], bytes]
_OPENMETRICS = "application/openmetrics-text"
_OPENMETRICS_EOF = b"# EOF\n"
# After an exposition this large, free memory goes back to the system at once (see
# exporter.gateway.allocator): some milliseconds, against the second or more it took.
_LARGE_EXPOSITION_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ScrapeTimeouts:
    """How a scrape's deadline follows from Prometheus' timeout header."""

    offset: float = setting_default("scrape_timeout_offset_seconds")
    maximum: float = setting_default("max_scrape_timeout_seconds")

    def deadline(self, header: str | None) -> Deadline:
        """The header's timeout minus the offset, capped; the maximum without a usable header."""
        seconds = self.maximum
        if header:
            try:
                offered = float(header)
            except ValueError:
                offered = float("nan")
            if offered > 0:  # also false for NaN: a broken header is ignored
                seconds = min(self.maximum, max(0.0, offered - self.offset))
        return Deadline.after(seconds)


class ExporterApp:
    """Routes requests; a scrape's deadline comes from Prometheus' scrape timeout header.

    ``catalogue`` tells the landing page and ``/sd`` which targets this replica collects and
    how they went; without one, the collector's own. ``sd_address`` is
    the ``host:port`` that ``/sd`` gives Prometheus to scrape; without one, the Host header
    of the request for ``/sd``.
    """

    def __init__(
        self,
        collector: UcdnCollector,
        *,
        runtime: CollectorRegistry | None = None,
        timeouts: ScrapeTimeouts | None = None,
        catalogue: TargetCatalogue | None = None,
        sd_address: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if sd_address is not None and scrape_address(sd_address) is None:
            raise ValueError(f"not a host:port Prometheus can scrape: {sd_address!r}")
        self._collector = collector
        self._runtime = runtime or CollectorRegistry()
        self._timeouts = timeouts or ScrapeTimeouts()
        self._catalogue: TargetCatalogue = catalogue or collector.catalogue
        self._sd_address = sd_address
        self._wall_clock = wall_clock
        self._routes: dict[str, Callable[[WSGIEnvironment], Response]] = {
            "/metrics": self._metrics,
            "/probe": self._probe,
            "/exporter-metrics": self._exporter_metrics,
            "/-/healthy": _plain_ok,
            "/-/ready": _plain_ok,
            "/sd": self._service_discovery,
            "/": self._landing,
        }

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        route = self._routes.get(path)
        if route is None:
            status, headers, body = (
                "404 Not Found",
                [("Content-Type", _TEXT)],
                b"404 page not found\n",
            )
        elif method not in {"GET", "HEAD"}:
            status, headers, body = "405 Method Not Allowed", [("Allow", "GET, HEAD")], b""
        else:
            status, headers, body = route(environ)
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [b""] if method == "HEAD" else [body]

    def _metrics(self, environ: "WSGIEnvironment") -> Response:
        deadline = self._timeouts.deadline(environ.get(_TIMEOUT_HEADER))
        metrics = self._collector.collect_within(deadline)
        return _expose(environ, chain(self._runtime.collect(), metrics))

    def _exporter_metrics(self, environ: "WSGIEnvironment") -> Response:
        metrics = self._collector.exporter_metrics()
        return _expose(environ, [*self._runtime.collect(), *metrics])

    def _probe(self, environ: "WSGIEnvironment") -> Response:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        target = self._allowed_target(query)
        if target is None:
            allowed = ", ".join(
                f"project_id={t.project_label}&platform={t.platform}"
                for t in self._collector.targets
            )
            message = f"unknown target: configured targets are {allowed}\n"
            return "400 Bad Request", [("Content-Type", _TEXT)], message.encode()
        deadline = self._timeouts.deadline(environ.get(_TIMEOUT_HEADER))
        metrics = self._collector.collect_probe(deadline, target)
        return _expose(environ, metrics)

    def _allowed_target(self, query: dict[str, list[str]]) -> Target | None:
        """The configured target the query names; user-supplied values never reach the API."""
        projects = query.get("project_id", [])
        platforms = query.get("platform", [])
        if len(projects) != 1 or len(platforms) != 1:  # both named, once each: no guessing
            return None
        for target in self._collector.targets:
            if target.project_label == projects[0] and target.platform == platforms[0]:
                return target
        return None

    def _landing(self, environ: "WSGIEnvironment") -> Response:
        page = render_status_page(
            version=__version__, catalogue=self._catalogue, now=self._wall_clock()
        )
        return "200 OK", [("Content-Type", "text/html; charset=utf-8")], page.encode()

    def _service_discovery(self, environ: "WSGIEnvironment") -> Response:
        address = self._sd_address or scrape_address(environ.get("HTTP_HOST"))
        if address is None:
            message = "the Host header is no host:port Prometheus can scrape\n"
            return "400 Bad Request", [("Content-Type", _TEXT)], message.encode()
        body = sd_document(self._catalogue.entries(), address)
        return "200 OK", [("Content-Type", "application/json")], body


def _expose(environ: "WSGIEnvironment", metrics: Iterable["Metric"]) -> Response:
    """``metrics`` in the format the request's Accept header asks for, by prometheus_client's
    own encoders (text 0.0.4 or 1.0.0, OpenMetrics, with the ``escaping`` asked for).

    Each family is encoded, and compressed when the client takes gzip, as it comes, so that
    a scrape holds one family's samples and text at a time beside the body so far: built
    whole, the families and their text of two thousand targets (a 19 MB exposition) took
    the exporter's peak RSS to 226-230 MB; a family at a time, 127-132 MB. The encoders
    write each family on its own (OpenMetrics' closing ``# EOF`` line, written after every
    call, is kept for the end). After a large exposition, free memory goes back to the
    system: RSS after each scrape then follows what the exporter holds (+1.0 MB over five
    scrapes at two thousand targets, +2.4 MB without).
    """
    encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
    headers = [("Content-Type", content_type)]
    closing = _OPENMETRICS_EOF if content_type.startswith(_OPENMETRICS) else b""
    zipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
    body = io.BytesIO()
    # Level 1: a third of level 6's CPU for a body a tenth larger (a scrape of 1,250
    # series: 0.3 ms and 8.2 KB against 0.85 ms and 7.5 KB).
    sink: io.BufferedIOBase = body
    if zipped:
        sink = gzip.GzipFile(fileobj=body, mode="wb", compresslevel=1)
    written = 0
    for family in metrics:
        text = encoder(MetricsSnapshot([family]))
        written += sink.write(text.removesuffix(closing) if closing else text)
    sink.write(closing)
    if written >= _LARGE_EXPOSITION_BYTES:
        # Its families are freed by now, in pieces that would stay in malloc's arenas.
        give_back_free_memory()
    if zipped:
        sink.close()  # writes the gzip trailer; the body stays open
        headers.append(("Content-Encoding", "gzip"))
    return "200 OK", headers, body.getvalue()


def _plain_ok(environ: "WSGIEnvironment") -> Response:
    return "200 OK", [("Content-Type", _TEXT)], b"OK\n"
