"""``python -m exporter`` runs the exporter's command line (``healthcheck`` too)."""

from exporter.entry import main

raise SystemExit(main())
