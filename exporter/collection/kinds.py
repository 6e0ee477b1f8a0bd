"""The kinds of task the exporter collects: prefetch (cache warm-up) and refresh (purge).

Both answer the same question the same way, through actions with the same parameters
and answers; a :class:`TaskKind` says which action, which metric families and which
summary limits (the refresh histogram has its own buckets) a kind uses.
"""

from dataclasses import dataclass
from typing import Final

from exporter.gateway.answers import PREFETCH_ACTION, REFRESH_ACTION
from exporter.metrics import KIND_FAMILIES, TargetFamilies
from exporter.summary.target_summary import SummaryLimits

_ACTIONS: Final = {"prefetch": PREFETCH_ACTION, "refresh": REFRESH_ACTION}


@dataclass(frozen=True)
class TaskKind:
    """One kind of task: its name, the API action that lists it, its families and limits."""

    name: str
    action: str
    families: TargetFamilies
    limits: SummaryLimits

    @classmethod
    def named(cls, name: str, limits: SummaryLimits) -> "TaskKind":
        """The kind called ``name`` (one of :data:`exporter.metrics.TASK_KINDS`)."""
        return cls(name, _ACTIONS[name], KIND_FAMILIES[name], limits)


PREFETCH: Final = TaskKind.named("prefetch", SummaryLimits())
