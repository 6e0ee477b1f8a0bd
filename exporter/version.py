"""The installed package's version, as the build info and the User-Agent report it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ucdn-prefetch-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
