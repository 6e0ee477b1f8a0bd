"""Prometheus exporter for the prefetch (cache warm-up) tasks of UCloud-compatible UCDN gateways."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ucdn-prefetch-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
