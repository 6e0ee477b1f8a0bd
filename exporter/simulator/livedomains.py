"""The demo world's domains: who they are, how task URLs spell them, how their quotas fill.

Every project has the same five domains, each with a part to play on the dashboard: one
whose URLs fail far more often than the others', one near its daily prefetch quota, one
with prefetch switched off that still has prefetch tasks, and two whose hosts the URLs
write in capitals or with a port, so the exporter's lower-casing and port stripping show.
Domain ids and the quotas' small daily jitter follow from the seed.

The day's use grows with the time of day (UTC, as the quotas' reset is not documented),
from a domain's share at midnight to its share by the day's end. It is a model, not a
count of the world's tasks: a prefetch every minute of up to 20 URLs would overrun a
real 500-URL quota many times over.
"""

import random
from dataclasses import dataclass
from functools import lru_cache

from exporter.simulator.protocol import (
    DAY_SECONDS,
    PREFETCH_QUOTA,
    REFRESH_DIR_QUOTA,
    REFRESH_FILE_QUOTA,
    Domain,
    Quota,
)

QUOTA_JITTER = 0.02  # the seed's shift of each domain's shares, so seeds differ
REFRESH_FILE_USE = (0.02, 0.45)
REFRESH_DIR_USE = (0.0, 0.5)


@dataclass(frozen=True)
class LiveDomain:
    """One domain of the demo world and its part in it."""

    name: str
    spellings: tuple[str, ...]  # how task URLs write the host, the plain name first
    failing_task_rate: float  # share of prefetch tasks with failing URLs
    prefetch_use: tuple[float, float]  # share of the prefetch quota used at 00:00 and 24:00
    prefetch_enabled: bool = True


# The demo's data stays clear of every alert threshold (mixin/config.libsonnet), so that what
# it fires it fires steadily (docs/deploying.md lists those alerts) and nothing flaps. The
# usual domains: 2.5% of tasks, 40% of their URLs, so ~1% of URLs fail. With the failing
# domain below, a target's failure ratio is 6 to 8%, under UcdnPrefetchFailureRatioHigh's 10%.
USUAL_FAILING_TASK_RATE = 0.025
LIVE_DOMAINS = (
    LiveDomain(
        "cdn.example.com",
        ("cdn.example.com", "CDN.Example.com"),
        USUAL_FAILING_TASK_RATE,
        (0.1, 0.6),
    ),
    LiveDomain(
        "static.example.com",
        ("static.example.com", "Static.Example.com:8443"),
        USUAL_FAILING_TASK_RATE,
        (0.05, 0.45),
    ),
    # Near its quota all day: 90% used or more at any hour, over the alert's 80%.
    LiveDomain(
        "downloads.example.com",
        ("downloads.example.com", "downloads.example.com:443"),
        USUAL_FAILING_TASK_RATE,
        (0.9, 0.98),
    ),
    # Switched off, yet tasks submitted before (or despite) it still show.
    LiveDomain(
        "video.example.com",
        ("video.example.com",),
        USUAL_FAILING_TASK_RATE,
        (0.02, 0.25),
        prefetch_enabled=False,
    ),
    # Its origin is unwell: about 28% of its URLs fail (70% of tasks, 40% of their URLs),
    # over UcdnDomainFailureRatioHigh's 20% and four times its project's ratio or more, where
    # the alert needs 2.5 times.
    LiveDomain("img.example.com", ("img.example.com",), 0.7, (0.05, 0.5)),
)
NEAR_QUOTA_DOMAIN = "downloads.example.com"
PREFETCH_OFF_DOMAIN = "video.example.com"
FAILING_DOMAIN = "img.example.com"


@lru_cache(maxsize=256)
def live_domains(seed: int, project_id: str) -> tuple[Domain, ...]:
    """The project's domains, their ids drawn from the seed."""
    rng = random.Random(f"{seed}/{project_id}/domains")
    return tuple(Domain(spec.name, f"ucdn-{rng.getrandbits(32):08x}") for spec in LIVE_DOMAINS)


def live_domain(seed: int, project_id: str, domain_id: str) -> LiveDomain | None:
    """The part the project's domain ``domain_id`` plays, or None when it has no such domain."""
    for domain, spec in zip(live_domains(seed, project_id), LIVE_DOMAINS, strict=True):
        if domain.domain_id == domain_id:
            return spec
    return None


def live_quota(seed: int, project_id: str, spec: LiveDomain, now: int) -> Quota:
    """The domain's quotas and use at ``now``: its shares, interpolated by the time of day."""
    rng = random.Random(f"{seed}/{project_id}/{spec.name}/{now // DAY_SECONDS}")
    day = (now % DAY_SECONDS) / DAY_SECONDS

    def used(quota: int, shares: tuple[float, float]) -> int:
        share = shares[0] + (shares[1] - shares[0]) * day + rng.uniform(0, QUOTA_JITTER)
        return round(quota * min(share, 1.0))

    return Quota(
        submit_prefetch_count=used(PREFETCH_QUOTA, spec.prefetch_use),
        submit_refresh_file=used(REFRESH_FILE_QUOTA, REFRESH_FILE_USE),
        submit_refresh_dir=used(REFRESH_DIR_QUOTA, REFRESH_DIR_USE),
    )
