"""The parts of cheroot the hardened web server relies on outside cheroot's documented API.

The installed cheroot is within pyproject's range and has every one; remove any one of
them and the check names it, and neither the server nor the command line serves.
"""

import tomllib
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import cheroot
import pytest
from conftest import REPO
from packaging.requirements import Requirement

from exporter.cli import main
from exporter.web.connections import (
    CHEROOT_INTERNALS,
    UnsupportedCherootError,
    missing_cheroot_internals,
)
from exporter.web.server import WebServer

IDS = [f"{owner.__name__}.{member}" for owner, member, _ in CHEROOT_INTERNALS]
WITH_USES = [(owner, member, uses) for owner, member, uses in CHEROOT_INTERNALS if uses]


def hello_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


def cheroot_requirement() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (requirement,) = [
        Requirement(text) for text in project["dependencies"] if text.startswith("cheroot")
    ]
    return requirement


def test_the_installed_cheroot_is_in_range_and_has_every_internal() -> None:
    requirement = cheroot_requirement()
    assert requirement.specifier.contains(cheroot.__version__), requirement
    # An upper bound: a major release the internals were not checked on is not admitted.
    assert any(spec.operator == "<" for spec in requirement.specifier), requirement
    assert CHEROOT_INTERNALS
    assert missing_cheroot_internals() == []


@pytest.mark.parametrize(("owner", "member", "uses"), CHEROOT_INTERNALS, ids=IDS)
def test_a_removed_internal_is_named(
    monkeypatch: pytest.MonkeyPatch, owner: type, member: str, uses: tuple[str, ...]
) -> None:
    monkeypatch.delattr(owner, member)
    missing = missing_cheroot_internals()
    assert len(missing) == 1, missing
    assert missing[0].split(" ")[0] == f"{owner.__name__}.{member}"


def stand_in(*args: Any, **kwargs: Any) -> None:
    """A member that exists but touches none of what the hardening needs it to."""


@pytest.mark.parametrize(
    ("owner", "member", "uses"), WITH_USES, ids=[f"{o.__name__}.{m}" for o, m, _ in WITH_USES]
)
def test_a_member_that_no_longer_uses_an_internal_is_named(
    monkeypatch: pytest.MonkeyPatch, owner: type, member: str, uses: tuple[str, ...]
) -> None:
    replaced = vars(owner)[member]
    monkeypatch.setattr(
        owner, member, property(stand_in) if isinstance(replaced, property) else stand_in
    )
    assert missing_cheroot_internals() == [f"{owner.__name__}.{member} using {', '.join(uses)}"]


def test_the_server_refuses_to_start_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(cheroot.server.HTTPServer, "put_conn")
    with pytest.raises(UnsupportedCherootError, match=r"HTTPServer\.put_conn\)"):
        WebServer(hello_app, "127.0.0.1", 0)


def test_the_command_line_refuses_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(cheroot.server.HTTPConnection, "ssl_env")
    assert main(["--demo", "--listen-address", "127.0.0.1:0", "--log-level", "error"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"ucdn-prefetch-exporter: cheroot {cheroot.__version__} lacks what the hardened web "
        "server relies on (HTTPConnection.ssl_env): install the cheroot version "
        "pyproject.toml names"
    ]
