"""A simulated UCDN API gateway, for ``--demo``, the tests and the benchmarks.

It is a real HTTP server on loopback speaking the provider's wire protocol: signed
requests as a GET query string, a POST form body or a POST JSON object, JSON answers
with ``RetCode``, offset paging and the documented filters.

The modules, one concern each: :mod:`~exporter.simulator.protocol` (actions, keys,
RetCodes, the dataset protocol), :mod:`~exporter.simulator.static` (fixed and generated
tasks), :mod:`~exporter.simulator.live` (the demo's moving world),
:mod:`~exporter.simulator.query` (reading a request), :mod:`~exporter.simulator.hooks`
(where faults plug in), :mod:`~exporter.simulator.server` (the HTTP server) and
:mod:`~exporter.simulator.cli` (``python -m exporter.simulator --help``). The catalogue of
faults lives with the tests, in ``tests/simfaults.py``.
"""

from exporter.simulator.hooks import Exchange, Fault, Faults, FixedDelay
from exporter.simulator.live import LiveDataset
from exporter.simulator.protocol import (
    ACTION,
    DAY_SECONDS,
    DEMO_PRIVATE_KEY,
    DEMO_PUBLIC_KEY,
    REQUEST_ID_HEADER,
    RESPONSE_ACTION,
    RET_ACTION_MISSING,
    RET_ACTION_NOT_EXIST,
    RET_PARAMS_INVALID,
    RET_RATE_LIMITED,
    RET_SIGNATURE_ERROR,
    Dataset,
    Target,
    Task,
)
from exporter.simulator.query import target_of
from exporter.simulator.server import RecordedRequest, SimulatedApi
from exporter.simulator.static import StaticDataset, generate_tasks

__all__ = [
    "ACTION",
    "DAY_SECONDS",
    "DEMO_PRIVATE_KEY",
    "DEMO_PUBLIC_KEY",
    "REQUEST_ID_HEADER",
    "RESPONSE_ACTION",
    "RET_ACTION_MISSING",
    "RET_ACTION_NOT_EXIST",
    "RET_PARAMS_INVALID",
    "RET_RATE_LIMITED",
    "RET_SIGNATURE_ERROR",
    "Dataset",
    "Exchange",
    "Fault",
    "Faults",
    "FixedDelay",
    "LiveDataset",
    "RecordedRequest",
    "SimulatedApi",
    "StaticDataset",
    "Target",
    "Task",
    "generate_tasks",
    "target_of",
]
