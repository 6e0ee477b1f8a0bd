"""The console script: ``healthcheck`` runs without importing the server's modules.

The server's imports take most of a second; a probe that runs every few seconds should
not pay for them.
"""

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``healthcheck`` or to the exporter's command line."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["healthcheck"]:
        from exporter.healthcheck import main as healthcheck  # noqa: PLC0415 - the point

        return healthcheck(arguments[1:])
    from exporter.cli import main as run  # noqa: PLC0415 - see the module docstring

    return run(arguments)
