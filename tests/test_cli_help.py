"""``--help``: grouped, a short usage line, every range and default, nothing wrapped mid-word;
and no flag taken for a prefix of another."""

import re

import annotated_types
import pytest

from exporter.cli import build_parser, main
from exporter.settings.config import Settings
from exporter.settings.names import env_name, flag_name

GROUPS = ["options", "API", "collection", "limits", "web", "logging", "modes"]


def help_text(monkeypatch: pytest.MonkeyPatch, columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    return build_parser().format_help()


def option_block(text: str, flag: str) -> str:
    """The help of one option, from its flag to the next option or group, on one line."""
    start = re.search(rf"^  {re.escape(flag)}\b", text, re.MULTILINE)
    assert start, flag
    # From the next line on: the first line may go on with the option's other flags.
    line_end = text.find("\n", start.end()) + 1 or len(text)
    end = re.search(r"^(  -|\S)", text[line_end:], re.MULTILINE)
    block = text[start.start() : line_end + (end.start() if end else len(text))]
    return " ".join(block.split())


def test_help_has_a_short_usage_and_the_groups_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_text(monkeypatch, 80)
    assert text.splitlines()[0] == "usage: ucdn-prefetch-exporter [options]"
    titles = [line[:-1] for line in text.splitlines() if re.fullmatch(r"[A-Za-z]\w*:", line)]
    assert titles == GROUPS
    group_of = {}
    for title, block in zip(GROUPS, re.split(r"^\w+:$", text, flags=re.MULTILINE)[1:], strict=True):
        group_of.update({flag: title for flag in re.findall(r"^  (--[\w.-]+)", block, re.M)})
    assert {group_of[flag] for flag in ("--public-key", "--api-url", "--max-retries")} == {"API"}
    assert group_of["--lookback-seconds"] == group_of["--task-kinds"] == "collection"
    assert group_of["--page-size"] == group_of["--max-url-series"] == "limits"
    assert group_of["--listen-address"] == group_of["--web-config-file"] == "web"
    assert group_of["--log-level"] == "logging"
    assert [flag for flag, title in group_of.items() if title == "modes"] == [
        "--demo",
        "--check-config",
        "--once",
        "--output",
    ]
    assert set(group_of) >= {flag_name(name) for name in Settings.model_fields}


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_no_word_of_the_help_is_wrapped(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    text = help_text(monkeypatch, columns)
    words = {word for line in text.splitlines() for word in line.split()}
    parser = build_parser()
    sources = [parser.description or "", parser.epilog or ""]
    sources += [action.help or "" for action in parser._actions]
    broken = [word for source in sources for word in source.split() if word not in words]
    assert broken == []
    assert "https://api.an-link.com/;" in words  # the default URL, whole on one line


def bounds(name: str) -> dict[str, object]:
    field = Settings.model_fields[name]
    kinds = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le)
    found = [bound for bound in field.metadata if isinstance(bound, kinds)]
    return {
        kind: getattr(bound, kind)
        for bound in found
        for kind in ("ge", "gt", "le")
        if hasattr(bound, kind)
    }


def test_every_bounded_setting_shows_its_range_and_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = help_text(monkeypatch, 80)
    bounded = [name for name in Settings.model_fields if bounds(name)]
    numbers = [
        name for name, field in Settings.model_fields.items() if field.annotation in (int, float)
    ]
    assert bounded == numbers  # every number has a range, and only numbers have one
    for name in bounded:
        block = option_block(text, flag_name(name))
        limits = bounds(name)
        default = Settings.model_fields[name].default
        if "ge" in limits and "le" in limits:
            shown = f"{limits['ge']}..{limits['le']}"
        else:
            words = {"ge": ">=", "gt": ">", "le": "<="}
            shown = ", ".join(f"{words[kind]}{value}" for kind, value in limits.items())
        assert f"({shown}, default {default}; env {env_name(name)})" in block, block
    # What an operator used to learn from the error, and the others' forms.
    assert "(60..2678400, default 86400;" in option_block(text, "--lookback-seconds")
    assert "(>0, <=600, default 10;" in option_block(text, "--request-timeout-seconds")
    assert "(>0, <=86400, default 30;" in option_block(text, "--max-scrape-timeout-seconds")
    assert "(>=64, default 1024;" in option_block(text, "--max-label-value-length")


@pytest.mark.parametrize("args", [["--lookback", "60"], ["--lookback=60"], ["--demo", "--check"]])
def test_a_prefix_of_a_flag_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    prefix = args[-1].split("=")[0] if args[-1].startswith("-") else args[0]
    assert capsys.readouterr().err.splitlines() == [
        f"ucdn-prefetch-exporter: unrecognized arguments: {prefix} (see --help)"
    ]
