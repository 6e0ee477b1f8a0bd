"""Render the monitoring mixin into ``prometheus/rules.yml``.

``mixin/*.libsonnet`` is the one source of the recording rules and the alerts, with their job
selector and thresholds in ``_config`` (``config.libsonnet``). This writes the rule file
Prometheus loads with ``rule_files:``: the mixin's ``prometheusRules`` then its
``prometheusAlerts``. ``deploy/kubernetes/generate_prometheusrule.py`` builds the
PrometheusRule from that file; ``make mixin`` runs both. ``--check`` exits 1 when the committed
file differs and prints the difference (the test suite runs it):

    python mixin/render.py [--check]
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import _jsonnet

MIXIN = Path(__file__).resolve().parent
ROOT = MIXIN.parent
sys.path.insert(0, str(ROOT / "deploy" / "kubernetes"))

from generate_prometheusrule import dump_yaml  # noqa: E402  (needs the path above)

RULES_FILE = ROOT / "prometheus" / "rules.yml"
HEADER = """\
# Generated from the monitoring mixin (mixin/*.libsonnet) by mixin/render.py: do not edit.
# Change the mixin and run `make mixin`; why each rule is written as it is, is said there.
# The exporter-down alert selects {selector}
# (exporterSelector in mixin/config.libsonnet), as prometheus/prometheus.yml names its job.
"""
# jsonnet writes an object's fields in alphabetical order; a rule reads better in this one.
RULE_FIELDS = ("record", "alert", "expr", "for", "labels", "annotations")
ANNOTATION_FIELDS = ("summary", "description", "runbook_url")


def evaluate(expression: str) -> Any:
    """The value of a jsonnet expression over the mixin, bound to ``mixin``."""
    snippet = f"local mixin = import 'mixin.libsonnet'; {expression}"
    return json.loads(_jsonnet.evaluate_snippet(str(MIXIN / "render.jsonnet"), snippet))


def ordered(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule with its fields, and its annotations, in the order people write them."""
    # A field of neither list would be left out of the file without a word.
    notes = rule.get("annotations", {})
    unknown = (set(rule) - set(RULE_FIELDS)) | (set(notes) - set(ANNOTATION_FIELDS))
    if unknown:
        raise ValueError(f"{rule.get('alert') or rule.get('record')}: unexpected {unknown}")
    fields = {name: rule[name] for name in RULE_FIELDS if name in rule}
    if notes:
        fields["annotations"] = {name: notes[name] for name in ANNOTATION_FIELDS if name in notes}
    return fields


def render() -> str:
    """The rule file exactly as it is committed."""
    groups = evaluate("mixin.prometheusRules.groups + mixin.prometheusAlerts.groups")
    for group in groups:
        group["rules"] = [ordered(rule) for rule in group["rules"]]
    header = HEADER.format(selector=evaluate("mixin._config.exporterSelector"))
    return header + dump_yaml({"groups": groups})


def main(argv: list[str] | None = None) -> int:
    """Write the rule file, or with --check compare it and print the diff; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the rule file differs; write nothing"
    )
    parser.add_argument("--output", type=Path, default=RULES_FILE, help="default: %(default)s")
    args = parser.parse_args(argv)
    wanted = render()
    if not args.check:
        args.output.write_text(wanted, encoding="utf-8")
        return 0
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    if current == wanted:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            str(args.output),
            "rendered",
        )
    )
    print(f"{args.output} is out of date: run make mixin", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
