"""``python -m exporter.simulator``: serve the simulated API from its own process."""

import sys

from exporter.simulator.cli import main

sys.exit(main())
