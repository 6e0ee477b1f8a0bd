"""Product text speaks of the product: the docs, the rules, the mixin, the deployment files
and the dashboard carry no issue numbers, commit hashes or "(before: ...)" history, which
belongs in CHANGELOG.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("docs", "prometheus", "deploy", "dashboards", "mixin")
# performance.md records the revisions its figures were measured on, for `make bench-ab`.
MEASURED_REVISIONS = {ROOT / "docs" / "performance.md"}
HISTORY = {
    "an issue number": re.compile(r"\bissues?\s*#?\d+|(?<![\w/.)\]])#\d+\b(?!-)", re.IGNORECASE),
    "a commit hash": re.compile(
        r"(?<![\w$./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b(?!-)"
    ),
    "a before/after comparison": re.compile(r"\(before\b|\bbefore:", re.IGNORECASE),
}


def product_files() -> list[Path]:
    return sorted(
        path
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and path.suffix in {".md", ".yml", ".yaml", ".json", ".py", ".libsonnet", ".service"}
        and "__pycache__" not in path.parts
        and path not in MEASURED_REVISIONS
    )


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_history_in_product_text(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [
        f"{what}: {match[0]!r}"
        for what, pattern in HISTORY.items()
        for match in pattern.finditer(text)
    ]
    assert found == []


def test_the_patterns_find_history() -> None:
    samples = {
        "an issue number": "the alerts of issue 12",
        "a commit hash": "one run of commit 5ef2566",
        "a before/after comparison": "8 ms at worst (before: up to 29 s)",
    }
    for what, sample in samples.items():
        assert HISTORY[what].search(sample), what
    clean = (
        "see [performance.md](performance.md#5-incremental-collection), request_id=6f1c2a4e-8d0b"
    )
    assert not any(pattern.search(clean) for pattern in HISTORY.values())
