"""The domains published are the ones with most URLs, whichever counters hold their counts.

A summary ranks a store's counts and one collection's together without merging them
(:func:`~exporter.summary.domain_counts.domain_urls` reads only the candidates); the result
must be the plain ranking of every count added up, order included.
"""

from collections import Counter

from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.gateway.answers import STATUSES
from exporter.summary.domain_counts import OTHER_DOMAIN, DomainCounter, domain_urls
from exporter.summary.totals import STATUS_OF

DOMAINS = (OTHER_DOMAIN, *(f"d{index}.example" for index in range(12)))
RAW_STATUSES = ("success", "failure", "wait", "process", "unknow", None, "odd")


def published(raw: str | None) -> str:
    return STATUS_OF.get(raw, "unknown")


def plainly(counts: Counter[tuple[str, str | None]], max_domains: int) -> dict[str, dict[str, int]]:
    """The definition: rows by published status, the most URLs first (ties by name) up to
    the cap, the rest and the host-less ones as ``_other`` when there are any."""
    rows: dict[str, dict[str, int]] = {}
    for (domain, raw), count in counts.items():
        rows.setdefault(domain, dict.fromkeys(STATUSES, 0))[published(raw)] += count
    ranked = sorted(
        (domain for domain in rows if domain != OTHER_DOMAIN),
        key=lambda domain: (-sum(rows[domain].values()), domain),
    )
    chosen = {domain: rows[domain] for domain in ranked[:max_domains]}
    rest = dict.fromkeys(STATUSES, 0)
    for domain in [*ranked[max_domains:], *([OTHER_DOMAIN] if OTHER_DOMAIN in rows else [])]:
        for status, count in rows[domain].items():
            rest[status] += count
    return {**chosen, OTHER_DOMAIN: rest} if any(rest.values()) else chosen


@settings(max_examples=examples(2000, fast=300))
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(DOMAINS),
            st.sampled_from(RAW_STATUSES),
            st.integers(1, 9),
            # which counter holds it: mostly the first, as a store holds most domains
            st.sampled_from((0, 0, 0, 1, 2)),
        ),
        max_size=120,
    ),
    max_domains=st.integers(1, 5),
)
def test_counters_ranked_apart_give_the_plain_ranking_of_their_sum(
    entries: list[tuple[str, str | None, int, int]], max_domains: int
) -> None:
    counters = [DomainCounter() for _ in range(3)]
    counts: Counter[tuple[str, str | None]] = Counter()
    url_statuses: Counter[str | None] = Counter()
    for domain, raw, count, which in entries:
        counters[which].add(domain, raw, count)
        counts[domain, raw] += count
        url_statuses[raw] += count
    found = domain_urls(counters, url_statuses, published, STATUSES, max_domains)
    assert list(found.items()) == list(plainly(counts, max_domains).items())


def test_a_counter_taken_out_leaves_no_domain_behind() -> None:
    held, page = DomainCounter(), DomainCounter()
    held.add("a.example", "success", 2)
    page.add("a.example", "success", 2)
    page.add("b.example", "failure", 1)
    held.merge(page, 1)
    held.merge(page, -1)
    assert (held.statuses, held.totals) == (
        {"a.example": Counter(success=2)},
        Counter({"a.example": 2}),
    )
