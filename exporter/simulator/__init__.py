"""A simulated UCDN API gateway, for ``--demo``, the tests and the benchmarks.

It is a real HTTP server on loopback speaking the provider's wire protocol: signed
requests as a GET query string, a POST form body or a POST JSON object, JSON answers
with ``RetCode``, offset paging and the documented filters.

The modules, one concern each: :mod:`~exporter.simulator.protocol` (actions, keys,
RetCodes, domains, quotas, the dataset protocol), :mod:`~exporter.simulator.static`
(fixed and generated worlds), :mod:`~exporter.simulator.live` (the demo's moving world,
planned by :mod:`~exporter.simulator.liveplans` and :mod:`~exporter.simulator.livedomains`),
:mod:`~exporter.simulator.query` (reading a request), :mod:`~exporter.simulator.api` (the
answers of the five actions), :mod:`~exporter.simulator.hooks` (where faults plug in),
:mod:`~exporter.simulator.server` (the HTTP server) and :mod:`~exporter.simulator.cli`
(``python -m exporter.simulator --help``). The catalogue of
faults lives with the tests, in ``tests/simfaults.py``.
"""

from exporter.model import ACTIONS
from exporter.simulator.hooks import Exchange, Fault, Faults, FixedDelay
from exporter.simulator.live import LiveDataset
from exporter.simulator.livedomains import FAILING_DOMAIN, NEAR_QUOTA_DOMAIN, PREFETCH_OFF_DOMAIN
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
    Domain,
    PrefetchOnlyDataset,
    Quota,
    Target,
    Task,
)
from exporter.simulator.query import target_of
from exporter.simulator.server import RecordedRequest, SimulatedApi
from exporter.simulator.static import StaticDataset, generate_tasks

__all__ = [
    "ACTION",
    "ACTIONS",
    "DAY_SECONDS",
    "DEMO_PRIVATE_KEY",
    "DEMO_PUBLIC_KEY",
    "FAILING_DOMAIN",
    "NEAR_QUOTA_DOMAIN",
    "PREFETCH_OFF_DOMAIN",
    "REQUEST_ID_HEADER",
    "RESPONSE_ACTION",
    "RET_ACTION_MISSING",
    "RET_ACTION_NOT_EXIST",
    "RET_PARAMS_INVALID",
    "RET_RATE_LIMITED",
    "RET_SIGNATURE_ERROR",
    "Dataset",
    "Domain",
    "Exchange",
    "Fault",
    "Faults",
    "FixedDelay",
    "LiveDataset",
    "PrefetchOnlyDataset",
    "Quota",
    "RecordedRequest",
    "SimulatedApi",
    "StaticDataset",
    "Target",
    "Task",
    "generate_tasks",
    "target_of",
]
