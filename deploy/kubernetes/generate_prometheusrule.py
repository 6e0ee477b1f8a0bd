"""Build ``prometheusrule.yaml`` from ``prometheus/rules.yml``.

prometheus-operator users get the shipped rules as a PrometheusRule resource whose
``spec.groups`` are the rule file's groups, unchanged. The rule file is rendered from the
monitoring mixin (``mixin/render.py``); ``make mixin`` runs both scripts. ``--check`` exits
1 when the committed manifest is out of date (the test suite runs it).

    python deploy/kubernetes/generate_prometheusrule.py [--check]
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE.parent.parent / "prometheus" / "rules.yml"
OUTPUT_FILE = HERE / "prometheusrule.yaml"
HEADER = (
    "# Generated from prometheus/rules.yml by deploy/kubernetes/generate_prometheusrule.py;\n"
    "# do not edit: change the mixin (mixin/*.libsonnet) and run `make mixin`.\n"
)
NAME = "ucdn-prefetch-exporter"


class _BlockDumper(yaml.SafeDumper):
    """Writes YAML as people write it: lists indented, multi-line strings as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, indentless=False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml(document: Any) -> str:
    """YAML as people write it, with every PromQL expression on the lines it was written on."""
    # width: a long PromQL line must stay one line, or the diff against the rules is unreadable
    return yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=10_000)


def load_groups(rules_file: Path) -> list[Any]:
    """Return the ``groups`` of a Prometheus rule file."""
    document = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{rules_file}: no 'groups' list")
    groups: list[Any] = document["groups"]
    return groups


def render(groups: list[Any]) -> str:
    """Return the PrometheusRule manifest carrying ``groups``."""
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": NAME,
            "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "exporter"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + dump_yaml(manifest)


def main(argv: list[str] | None = None) -> int:
    """Write the manifest, or with ``--check`` report whether the committed one is current."""
    parser = argparse.ArgumentParser(description="Build a PrometheusRule from a rule file.")
    parser.add_argument("--rules", type=Path, default=RULES_FILE, help="the Prometheus rule file")
    parser.add_argument("--output", type=Path, default=OUTPUT_FILE, help="the manifest to write")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the manifest differs; write nothing"
    )
    args = parser.parse_args(argv)
    expected = render(load_groups(args.rules))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != expected:
            print(f"{args.output} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
