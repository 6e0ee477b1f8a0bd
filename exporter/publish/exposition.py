"""The text of a scrape, byte for byte as prometheus_client writes it, for a fraction of its cost.

prometheus_client's encoders check and escape every metric and label name of every
sample (the OpenMetrics one character by character), which for the thousand-odd
samples of a target with many unfinished URLs costs more than a collection between full
syncs. :class:`Exposition` writes the same bytes for the formats Prometheus asks for,
text 0.0.4 and OpenMetrics 1.0.0 with underscore escaping, and keeps each sample's line
from the previous scrape of the same page: most series do not change between scrapes,
and a line looked up costs a fraction of one written. A family whose samples come in
runs (:class:`GaugeRuns`) keeps the text of each run, so that a run that recurs is
written without a look at its samples.

It falls back on prometheus_client's own encoder for anything else: another format,
version or escaping, a name that is not a plain ``[a-zA-Z_][a-zA-Z0-9_]*`` (which
those encoders would escape or quote), a timestamp, an exemplar or a native histogram.
``tests/publish/test_fast_exposition.py`` checks the bytes against prometheus_client's on random
families.
"""

import functools
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_1_0_0
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.samples import Sample

    SampleRun = tuple[Sample, ...]

# The content types choose_encoder gives the formats written here.
_TEXT: Final = CONTENT_TYPE_PLAIN_0_0_4
_OPENMETRICS: Final = frozenset({OPENMETRICS_1_0_0, OPENMETRICS_1_0_0 + "; escaping=underscores"})
# A name neither format escapes: the legacy one, less the colon OpenMetrics would replace.
_PLAIN_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The text format's name for each type, where it is not OpenMetrics' own.
_TEXT_TYPES: Final = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_TEXT_SUFFIXES: Final = {"counter": "_total", "info": "_info"}
# Samples the text format moves to a gauge family of their own, after their family's.
_MOVED_SUFFIXES: Final = ("_created", "_gsum", "_gcount")

_LineKey = tuple[str, tuple[tuple[str, str], ...], object]


class _UnwritableError(Exception):
    """A sample or family this module does not write: prometheus_client's encoder does."""


class GaugeRuns(GaugeMetricFamily):
    """A gauge family whose samples come in runs that recur from one scrape to the next.

    Its samples are its runs one after the other (:meth:`add_run` keeps them so). A run
    written on the page's last scrape, the very tuple, is written again from its text,
    without a look at each of its samples: most of a target's thousand progress series
    come in runs of a task each, unchanged between scrapes.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels=labels)
        self.runs: list[SampleRun] = []

    def add_run(self, run: "SampleRun") -> None:
        """Add ``run``'s samples, each named as this family (as :meth:`add_metric` names)."""
        self.samples.extend(run)
        self.runs.append(run)


class MetricsSnapshot(Collector):
    """Metrics already collected, handed to prometheus_client's encoders as a registry would be."""

    def __init__(self, metrics: Sequence["Metric"]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable["Metric"]:
        return self._metrics


class Exposition:
    """Writes scrapes, remembering each page's sample lines until its next scrape."""

    def __init__(self) -> None:
        self._lines: dict[str, _PageLines] = {}
        self._lock = threading.Lock()

    def encode(self, metrics: Sequence["Metric"], accept: str, page: str) -> tuple[bytes, str]:
        """The body of ``metrics`` in the format ``accept`` asks for, and its content type.

        ``page`` names what the metrics are the scrape of (``/metrics``, a probe's
        target): its lines are kept for its next scrape, and only those.
        """
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type in _OPENMETRICS
        if content_type != _TEXT and not openmetrics:
            return encoder(MetricsSnapshot(metrics)), content_type
        with self._lock:
            known = self._lines.get(page) or _PageLines()
        lines = _PageLines()
        try:
            text = _write(metrics, openmetrics, _Lines(known, lines))
        except _UnwritableError:
            return encoder(MetricsSnapshot(metrics)), content_type
        with self._lock:
            self._lines[page] = lines
        return text.encode("utf-8"), content_type


class _Lines:
    """Sample lines: those of the page's last scrape, and those of this one so far.

    A line is found by its sample's name, labels and value, or, for a Sample the
    collector kept from the last scrape (see ``SeriesMemo``), by the Sample
    itself, which is cheaper: a Sample is immutable, and the entry holds it, so its id
    is not reused while the entry lives.
    """

    def __init__(self, known: "_PageLines", lines: "_PageLines") -> None:
        self.known = known
        self.lines = lines

    def of_family(self, metric: "Metric") -> list[str]:
        """The lines of ``metric``'s samples, a run at a time where it comes in runs."""
        if isinstance(metric, GaugeRuns) and sum(map(len, metric.runs)) == len(metric.samples):
            return self.of_runs(metric.runs)
        return self.of(metric.samples)

    def of_runs(self, runs: Sequence["SampleRun"]) -> list[str]:
        """The text of each run: one of the page's last scrape as it was written then (the
        entry holds the run, so its id is not reused), any other sample by sample."""
        by_run, now_by_run = self.known.by_run, self.lines.by_run
        texts: list[str] = []
        for run in runs:
            kept = by_run.get(id(run))
            if kept is None or kept[0] is not run:
                kept = (run, "".join(self.of(run)))
            now_by_run[id(run)] = kept
            texts.append(kept[1])
        return texts

    def of(self, samples: Sequence["Sample"]) -> list[str]:
        """The lines of ``samples``, in order (one loop for a family: this runs per sample)."""
        by_sample, by_content = self.known.by_sample, self.known.by_content
        now_by_sample, now_by_content = self.lines.by_sample, self.lines.by_content
        written: list[str] = []
        for sample in samples:
            kept = by_sample.get(id(sample))
            if kept is None or kept[0] is not sample:
                value = sample.value
                # 0.0 and -0.0 are equal keys but two texts: zeros are told apart by repr.
                key = (sample.name, tuple(sample.labels.items()), value or repr(value))
                line = by_content.get(key) or _sample_line(sample)
                now_by_content[key] = line
                kept = (sample, line)
            now_by_sample[id(sample)] = kept
            written.append(kept[1])
        return written


class _PageLines:
    """The lines of one scrape of a page, by content and by Sample."""

    def __init__(self) -> None:
        self.by_content: dict[_LineKey, str] = {}
        self.by_sample: dict[int, tuple[Sample, str]] = {}
        self.by_run: dict[int, tuple[SampleRun, str]] = {}


def _write(metrics: Sequence["Metric"], openmetrics: bool, lines: _Lines) -> str:
    output: list[str] = []
    for metric in metrics:
        if openmetrics:
            _write_openmetrics(metric, output, lines)
        else:
            _write_text(metric, output, lines)
    if openmetrics:
        output.append("# EOF\n")
    return "".join(output)


def _write_text(metric: "Metric", output: list[str], lines: _Lines) -> None:
    name = _plain(metric.name)
    kind = metric.type
    shown = name + _TEXT_SUFFIXES.get(kind, "")
    help_text = _help_text(metric.documentation)
    output.append(f"# HELP {shown} {help_text}\n# TYPE {shown} {_TEXT_TYPES.get(kind, kind)}\n")
    samples = metric.samples
    moved_names = {name + suffix: suffix for suffix in _MOVED_SUFFIXES}
    # A gauge's samples bear its name: none is moved.
    if isinstance(metric, GaugeRuns) or not any(sample.name in moved_names for sample in samples):
        output.extend(lines.of_family(metric))
        return
    moved: dict[str, list[str]] = {}
    for sample, line in zip(samples, lines.of(samples), strict=True):
        suffix = moved_names.get(sample.name)
        if suffix is None:
            output.append(line)
        else:
            moved.setdefault(suffix, []).append(line)
    for suffix, moved_lines in sorted(moved.items()):
        output.append(f"# HELP {name}{suffix} {help_text}\n# TYPE {name}{suffix} gauge\n")
        output.extend(moved_lines)


def _write_openmetrics(metric: "Metric", output: list[str], lines: _Lines) -> None:
    name = _plain(metric.name)
    help_text = _help_text(metric.documentation).replace('"', r"\"")
    output.append(f"# HELP {name} {help_text}\n# TYPE {name} {metric.type}\n")
    if metric.unit:
        output.append(f"# UNIT {name} {metric.unit}\n")
    output.extend(lines.of_family(metric))


def _sample_line(sample: "Sample") -> str:
    if (
        sample.timestamp is not None
        or sample.exemplar is not None
        or sample.native_histogram is not None
        or sample.value is None
    ):
        raise _UnwritableError
    name = _plain(sample.name)
    if not sample.labels:
        return f"{name} {floatToGoString(sample.value)}\n"
    labels = ",".join(
        f'{_plain(label)}="{_label_value(value)}"' for label, value in sorted(sample.labels.items())
    )
    return f"{name}{{{labels}}} {floatToGoString(sample.value)}\n"


@functools.lru_cache(maxsize=4096)  # the exporter's names are a few dozen; a match is not free
def _plain(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name) is None:
        raise _UnwritableError
    return name


def _help_text(documentation: str) -> str:
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
