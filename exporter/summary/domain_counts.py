"""A window's URLs counted by domain (the URL's host) and raw status, cheaply.

Parsing every URL's host is the cost, so it is paid once per distinct *host prefix*
(``scheme://host/``, up to the first ``/``, ``?`` or ``#`` after the host), which every
URL of a domain shares. A task's URLs usually are on one host: when every one starts
with the first one's (a C-level ``startswith`` pass tells), the task is counted by its
statuses, and no URL is matched one by one.

Publishing the domains with most URLs must not cost a pass over every domain held in
Python either: a window can hold tens of thousands of hosts, a scrape publishes a
hundred. Each counter keeps every domain's total beside its counts by status, so that
:func:`domain_urls` ranks the totals in one pass of C-level comparisons and reads the
counts of the chosen domains alone: a steady scrape of 90,000 tasks on as many hosts
costs 1.3x one of 90,000 tasks on one host (``benchmarks/bench_domains.py``).
"""

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, repeat
from operator import neg
from typing import Final, TypeVar, cast
from urllib.parse import urlsplit

OTHER_DOMAIN: Final = "_other"  # URLs without a host, and the domains beyond the cap
# The start of a URL up to the end of its host: everything that decides the host.
_HOST_PREFIX: Final = re.compile(r"[^/?#]*//[^/?#]*[/?#]")
# That start, or the whole URL when it has none: a key for every URL.
_KEY: Final = re.compile(_HOST_PREFIX.pattern + "|.*", re.DOTALL)
_K = TypeVar("_K")


def domain_of(url: str) -> str:
    """The URL's host, lower-cased, without port or IPv6 brackets; ``_other`` if it has none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket: no host can be told
        return OTHER_DOMAIN
    return host or OTHER_DOMAIN


class DomainCounter:
    """URL counts by domain and raw status, and each domain's total, page by page."""

    def __init__(self) -> None:
        self.statuses: dict[str, Counter[str | None]] = {}  # domain -> raw status -> URLs
        self.totals: Counter[str] = Counter()  # domain -> URLs, every status

    def add(self, domain: str, status: str | None, count: int) -> None:
        """Count ``count`` URLs of ``domain`` whose raw status is ``status``."""
        statuses = self.statuses.get(domain)
        if statuses is None:
            statuses = self.statuses[domain] = Counter()
        statuses[status] += count
        self.totals[domain] += count

    def merge(self, other: "DomainCounter", sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) another counter's counts; a domain left with
        no URL leaves the counter, so that it is not published with zeros."""
        for domain, theirs in other.statuses.items():
            mine = self.statuses.get(domain)
            if mine is None:
                mine = self.statuses[domain] = Counter()
            merge_counts(mine, theirs, sign)
            if not mine:
                del self.statuses[domain]
        merge_counts(self.totals, other.totals, sign)

    def add_page(
        self,
        urls: list[str],
        statuses: list[str | None],
        lengths: list[int],
        domain_of_prefix: dict[str, str],
    ) -> list[str | None]:
        """Count one page's URLs; return each task's domain, None where it has no one domain.

        ``lengths`` are the tasks' URL counts, in order. ``domain_of_prefix`` remembers the
        hosts already parsed; the caller decides how long it lives (a collection), so that
        counts kept for long do not keep it.
        """
        domains: list[str | None] = []
        for start, length in _spans(lengths):
            stop = start + length
            domain = _one_domain(urls, start, length, domain_of_prefix)
            if domain is None:
                found = count_by_domain(urls[start:stop], statuses[start:stop], domain_of_prefix)
                for (each, status), count in found.items():
                    self.add(each, status, count)
            else:  # a task's URLs usually share a host: counted by status, not URL by URL
                for status, count in Counter(statuses[start:stop]).items():
                    self.add(domain, status, count)
            domains.append(domain)
        return domains


def merge_counts(mine: Counter[_K], theirs: Counter[_K], sign: int) -> None:
    """Add (``sign`` 1) or take out (-1) counts; a count that reaches 0 leaves the Counter,
    so that a key whose every count left is not published with zeros."""
    for key, count in theirs.items():
        total = mine[key] + sign * count
        if total:
            mine[key] = total
        else:
            del mine[key]


def count_by_domain(
    urls: list[str], statuses: list[str | None], domain_of_prefix: dict[str, str]
) -> Counter[tuple[str, str | None]]:
    """``urls`` counted by ``(domain, raw status)`` one by one: for URLs on several hosts."""
    matches = cast("Iterator[re.Match[str]]", map(_KEY.match, urls))  # _KEY matches all
    by_prefix = Counter(zip(map(re.Match.group, matches), statuses, strict=True))
    counts: Counter[tuple[str, str | None]] = Counter()
    for (prefix_or_url, status), count in by_prefix.items():
        counts[_domain(prefix_or_url, domain_of_prefix), status] += count
    return counts


def _spans(lengths: list[int]) -> Iterator[tuple[int, int]]:
    return zip(accumulate(lengths, initial=0), lengths, strict=False)  # one start more than lengths


def _one_domain(
    urls: list[str], start: int, length: int, domain_of_prefix: dict[str, str]
) -> str | None:
    """The domain of every one of a task's URLs, or None if they have not all one."""
    if not length:
        return None
    match = _HOST_PREFIX.match(urls[start])
    if match is None:
        return None
    prefix = match.group()
    if not all(map(str.startswith, urls[start : start + length], repeat(prefix))):
        return None
    return _domain(prefix, domain_of_prefix)


def _domain(prefix: str, domain_of_prefix: dict[str, str]) -> str:
    domain = domain_of_prefix.get(prefix)
    if domain is None:
        domain = domain_of_prefix[prefix] = domain_of(prefix)
    return domain


def domain_urls(
    counters: Sequence[DomainCounter],
    url_statuses: Counter[str | None],
    status_of: Callable[[str | None], str],
    statuses: tuple[str, ...],
    max_domains: int,
) -> dict[str, dict[str, int]]:
    """Counts by domain and published status, over ``counters`` taken together (whose URLs
    by raw status are ``url_statuses``): the ``max_domains`` domains with most URLs (ties
    by name) in that order, then ``_other`` with the rest and the host-less ones.

    The largest counter (a store's finished tasks) is ranked alone; the others (one
    collection's tasks) hold few domains. Adding counts only moves a domain up, so every
    domain ahead of one in the largest counter's order is still ahead of it in the sum:
    the only candidates are the largest's first ``max_domains`` and the others' domains.
    """
    largest, *others = sorted(counters, key=lambda counter: len(counter.totals), reverse=True)
    added: Counter[str] = Counter()
    for counter in others:
        added.update(counter.totals)
    added.pop(OTHER_DOMAIN, None)
    by_total = zip(map(neg, largest.totals.values()), largest.totals, strict=True)
    ranked = heapq.nsmallest(max_domains + 1, by_total)  # _other may be one: not ranked
    candidates = {domain for _, domain in ranked if domain != OTHER_DOMAIN} | added.keys()
    totals = {domain: largest.totals[domain] + added[domain] for domain in candidates}
    chosen = sorted(candidates, key=lambda domain: (-totals[domain], domain))[:max_domains]
    rest = dict.fromkeys(statuses, 0)
    for raw, count in url_statuses.items():
        rest[status_of(raw)] += count
    published: dict[str, dict[str, int]] = {}
    for domain in chosen:
        row = published[domain] = dict.fromkeys(statuses, 0)
        for counter in counters:
            for raw, count in counter.statuses.get(domain, {}).items():
                row[status_of(raw)] += count
                rest[status_of(raw)] -= count
    if any(rest.values()):
        published[OTHER_DOMAIN] = rest
    return published
