"""Generate the Grafana overview dashboard for ucdn-prefetch-exporter.

The dashboard is built with grafana-foundation-sdk's typed builders (the `overview`
package beside this script: one module per row) and written to
dashboards/ucdn-prefetch-overview.json, which is committed so that users need neither
Python nor this script:

    python dashboards/generate.py          # rewrite the JSON
    python dashboards/generate.py --check  # exit 1 if the committed JSON is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from overview.board import build

OUTPUT = Path(__file__).resolve().parent / "ucdn-prefetch-overview.json"


def render() -> str:
    """The dashboard's JSON exactly as it is committed."""
    return json.dumps(build(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the JSON, or with --check compare it and print the diff; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with the committed JSON instead of writing it; exit 1 if they differ",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    wanted = render()
    if not args.check:
        args.output.write_text(wanted)
        return 0
    current = args.output.read_text() if args.output.exists() else ""
    if current == wanted:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            str(args.output),
            "generated",
        )
    )
    print(f"{args.output} is stale: run python dashboards/generate.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
