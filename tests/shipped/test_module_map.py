"""The package's layout as CONTRIBUTING.md draws it: the module map names every module of
exporter/ once and nothing else, imports run one way (up), and every ``__init__.py`` is empty.

Imports are read from the source (ast), the ones inside functions included, so a lazy
import is held to the same order as any other.
"""

import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "exporter"
# The subpackages, bottom to top: a module may import from its own and from those below.
LAYERS = ("settings", "gateway", "summary", "collection", "publish", "web", "simulator")
# The root's leaves: any module may import them, and they import nothing of the package.
LEAVES = frozenset({"exporter.metrics", "exporter.logs", "exporter.version"})
# The root's entry points, on top of everything: nothing else may import them.
ENTRY_POINTS = frozenset(
    {
        "exporter.cli",
        "exporter.modes",
        "exporter.healthcheck",
        "exporter.entry",
        "exporter.__main__",
    }
)
MAP_ROW = re.compile(r"^\| ([^|]+?) \|")


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name, ``__init__`` files aside."""
    found = {
        ".".join(path.relative_to(REPO).with_suffix("").parts): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py"
    }
    assert found, f"no module under {PACKAGE}"
    return found


def module_map() -> str:
    """The module map section of CONTRIBUTING.md."""
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.partition("\n## The module map\n")[2].partition("\n## ")[0]
    assert section, "CONTRIBUTING.md has no module map section"
    return section


def mapped_modules() -> list[str]:
    """The module each row of the map's tables names, in order, as a path."""
    rows = [
        match[1]
        for line in module_map().splitlines()
        if (match := MAP_ROW.match(line)) and match[1] not in ("module", "---")
    ]
    assert rows, "the module map has no row"
    named = []
    for cell in rows:
        paths = re.findall(r"`([^`]+)`", cell)
        assert len(paths) == 1 and f"`{paths[0]}`" == cell, f"one module a row: {cell!r}"
        named.append(paths[0])
    return named


def test_the_map_names_every_module_once_and_nothing_else() -> None:
    named = mapped_modules()
    assert len(named) == len(set(named)), (
        f"named twice: {sorted(n for n in named if named.count(n) > 1)}"
    )
    actual = {str(path.relative_to(REPO)) for path in modules().values()}
    assert sorted(actual - set(named)) == [], "modules missing from the map"
    assert sorted(set(named) - actual) == [], "the map names modules that do not exist"


def test_the_map_groups_the_subpackages_bottom_to_top() -> None:
    headings = re.findall(r"^### (\w+)", module_map(), flags=re.MULTILINE)
    assert headings == [*LAYERS, "the"], headings  # the root's table comes last
    # Each table holds its own subpackage's modules alone.
    current = ""
    for line in module_map().splitlines():
        if heading := re.match(r"^### (\w+)", line):
            current = heading[1]
        elif (row := MAP_ROW.match(line)) and row[1].startswith("`exporter/"):
            layer = row[1].strip("`").split("/")[1]
            assert layer == current or (current == "the" and layer.endswith(".py")), row[1]


def layer_of(name: str) -> int | None:
    """The place in LAYERS of a subpackage or of one of its modules; None for the root's."""
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def imported_modules(module: str, path: Path) -> set[str]:
    """The package's modules and subpackages that ``module`` imports, by dotted name."""
    imported: set[str] = set()
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            # "from exporter.web import server" imports the module exporter.web.server.
            imported |= {source, *(f"{source}.{alias.name}" for alias in node.names)}
    packages = {f"exporter.{layer}" for layer in LAYERS}
    return {name for name in imported if name in modules() or name in packages}


def test_every_root_module_is_a_leaf_or_an_entry_point() -> None:
    root = {module for module in modules() if layer_of(module) is None}
    assert root == LEAVES | ENTRY_POINTS


def test_imports_run_one_way_up() -> None:
    wrong = []
    for module, path in modules().items():
        if module in ENTRY_POINTS:
            continue  # on top: they may import anything
        own = layer_of(module)
        for target in sorted(imported_modules(module, path)):
            if own is None:  # a leaf
                wrong.append(f"{module}, a leaf, imports {target}")
            elif target in LEAVES:
                continue
            elif (layer := layer_of(target)) is None or layer > own:
                wrong.append(f"{module} imports {target}, above it")
    assert wrong == []


def test_the_rule_is_checked_on_what_the_package_imports() -> None:
    # The check above must see real imports, or it would pass on nothing.
    cli = imported_modules("exporter.cli", PACKAGE / "cli.py")
    assert {"exporter.web.server", "exporter.settings.config", "exporter.logs"} <= cli
    # Lazy imports count: cli.py imports the simulator inside a function.
    assert "exporter.simulator.server" in cli
    sweep = imported_modules(
        "exporter.collection.quota_sweep", PACKAGE / "collection/quota_sweep.py"
    )
    assert "exporter.metrics" in sweep and "exporter.collection.singleflight" in sweep


def test_every_init_is_empty() -> None:
    inits = sorted(PACKAGE.rglob("__init__.py"))
    assert len(inits) == 1 + len(LAYERS), inits  # the package's and each subpackage's
    assert [str(path) for path in inits if path.read_text(encoding="utf-8")] == []
