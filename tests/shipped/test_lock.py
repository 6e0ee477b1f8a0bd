"""requirements.lock against pyproject.toml and the Dockerfile, read as text (fast lane).

The image installs its dependencies from the lock alone (``--require-hashes --no-deps``),
so a runtime dependency missing from the lock, or pinned outside pyproject's range, would
reach production only as an import error. ``make lock`` regenerates the file; the image's
build is replayed for real in test_packaging.py (system).
"""

import re
import tomllib

from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*\\$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(\s*\\)?$")


def locked() -> dict[str, tuple[str, int]]:
    """Each pinned package: its version and how many hashes it carries."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := PIN.match(line):
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{current} pinned twice"
            pins[current] = (match.group(2), 0)
        elif HASH.match(line) and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        else:
            raise AssertionError(f"not a pin or a hash: {line!r}")
    assert pins, "requirements.lock pins nothing"
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    assert requirements, "pyproject.toml declares no runtime dependency"
    return requirements


def test_every_runtime_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock (make lock)"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} in requirements.lock is outside {requirement} (make lock)"
        )


def test_every_pin_is_exact_and_hashed() -> None:
    pins = locked()
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"pinned without a hash: {unhashed}"


def test_the_lock_holds_no_test_or_development_tools() -> None:
    # The image gets what the exporter imports, nothing of the test extras.
    pins = locked()
    for tool in ("pytest", "hypothesis", "mypy", "ruff", "pip-tools"):
        assert tool not in pins


def test_the_image_installs_the_lock_with_hashes_and_the_package_without_dependencies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    assert re.search(r"install --require-hashes --no-deps -r requirements\.lock", joined)
    assert re.search(r"install --no-deps /wheels/\*\.whl", joined)
