"""Product text speaks of the product: the README, the docs, the Makefile, the benchmarks, the
package's comments and strings, the rules, the mixin, the deployment files and the dashboard
carry no issue numbers, commit hashes or "(before: ...)" history, which belongs in
CHANGELOG.md; and every description of the product names all it collects."""

from __future__ import annotations

import io
import json
import re
import tokenize
import tomllib
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from exporter.cli import build_parser
from exporter.gateway.api_client import ApiClient
from exporter.publish.collector import UcdnCollector
from exporter.settings.target import Target
from exporter.web.app import ExporterApp

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("docs", "prometheus", "deploy", "dashboards", "mixin", "benchmarks", "exporter")
FILES = ("README.md", "CONTRIBUTING.md", "Makefile")
SUFFIXES = {".md", ".yml", ".yaml", ".json", ".py", ".libsonnet", ".service"}
HISTORY = {
    "an issue number": re.compile(r"\bissues?\s*#?\d+|(?<![\w/.)\]])#\d+\b(?!-)", re.IGNORECASE),
    "a commit hash": re.compile(
        r"(?<![\w$./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b(?!-)"
    ),
    "a before/after comparison": re.compile(
        r"\(before:|\(before\s+(?:up to |about )?\d|\bbefore:\s*(?:up to |about )?\d",
        re.IGNORECASE,
    ),
}


def product_files() -> list[Path]:
    found = [ROOT / name for name in FILES]
    found += [
        path
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
    ]
    return sorted(found)


# Python 3.12 splits an f-string into tokens of its own; 3.11 has it as one STRING.
PROSE_TOKENS = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)}


def prose(path: Path) -> str:
    """What a reader reads: the whole file, or a Python module's comments and strings."""
    text = path.read_text(encoding="utf-8")
    return python_prose(text) if path.suffix == ".py" else text


def python_prose(code: str) -> str:
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return "\n".join(token.string for token in tokens if token.type in PROSE_TOKENS)


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_history_in_product_text(path: Path) -> None:
    text = prose(path)
    found = [
        f"{what}: {match[0]!r}"
        for what, pattern in HISTORY.items()
        for match in pattern.finditer(text)
    ]
    assert found == []


def test_the_scan_reads_the_package_and_the_top_level_files() -> None:
    scanned = {path.relative_to(ROOT).as_posix() for path in product_files()}
    assert {*FILES, "docs/performance.md", "exporter/cli.py", "benchmarks/bench_scrape.py"} <= (
        scanned
    )


def test_the_patterns_find_history() -> None:
    samples = {
        "an issue number": "the alerts of issue 12",
        "a commit hash": "one run of commit 5ef2566",
        "a before/after comparison": "8 ms at worst (before: up to 29 s)",
    }
    for what, sample in samples.items():
        assert HISTORY[what].search(sample), what
    clean = (
        "see [performance.md](performance.md#5-incremental-collection), request_id=6f1c2a4e-8d0b, "
        "tasks summarised before: their totals (before a proxy's CONNECT)"
    )
    assert not any(pattern.search(clean) for pattern in HISTORY.values())
    code = 'def add(before: "Store") -> None:\n    # issue 7\n    return f(before)\n'
    assert HISTORY["an issue number"].search(python_prose(code))
    assert not HISTORY["a before/after comparison"].search(python_prose("x = (before + 1)\n"))


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    assert status == "200 OK"


def landing_page() -> str:
    client = ApiClient("http://127.0.0.1:9/", "public", SecretStr("private"))
    collector = UcdnCollector(client, [Target("", "cdn")])
    try:
        app = ExporterApp(collector, runtime=CollectorRegistry())
        environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET"}
        setup_testing_defaults(environ)
        return b"".join(app(environ, start_response)).decode()
    finally:
        collector.close()
        client.close()


def test_every_description_of_the_product_names_all_it_collects() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    board = json.loads((ROOT / "dashboards" / "ucdn-prefetch-overview.json").read_text())
    descriptions = {
        "pyproject.toml": pyproject["project"]["description"],
        "the dashboard": board["description"],
        "the landing page": landing_page(),
        "--help": build_parser().description or "",
    }
    for where, text in descriptions.items():
        pattern = r"\bprefetch\b.*\brefresh \(purge\)\s+tasks\b.*\bquotas\b"
        assert re.search(pattern, text, re.DOTALL | re.IGNORECASE), where
