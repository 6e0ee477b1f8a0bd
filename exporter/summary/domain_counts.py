"""A window's URLs counted by domain (the URL's host) and raw status, cheaply.

Parsing every URL's host is the cost, so it is paid once per distinct *host prefix*
(``scheme://host/``, up to the first ``/``, ``?`` or ``#`` after the host), which every
URL of a domain shares. A page's URLs are often all on one host, and a task's usually
are: when every URL of a page starts with the first one's, or every URL of each task
with its task's first one's (C-level ``startswith`` passes tell), the page is counted by
its status counts, or task by task by the tasks' lengths and the page's status columns,
and no URL is matched or paired with its status one by one.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, chain, compress, repeat
from operator import eq
from typing import Final, cast
from urllib.parse import urlsplit

OTHER_DOMAIN: Final = "_other"  # URLs without a host, and the domains beyond the cap
# The start of a URL up to the end of its host: everything that decides the host.
_HOST_PREFIX: Final = re.compile(r"[^/?#]*//[^/?#]*[/?#]")
# That start, or the whole URL when it has none: a key for every URL.
_KEY: Final = re.compile(_HOST_PREFIX.pattern + "|.*", re.DOTALL)


def domain_of(url: str) -> str:
    """The URL's host, lower-cased, without port or IPv6 brackets; ``_other`` if it has none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket: no host can be told
        return OTHER_DOMAIN
    return host or OTHER_DOMAIN


class DomainCounter:
    """URL counts by ``(domain, raw status)``, page by page."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str | None]] = Counter()

    def add_page(
        self,
        urls: list[str],
        statuses: list[str | None],
        status_counts: Counter[str | None],
        lengths: list[int],
        domain_of_prefix: dict[str, str],
    ) -> list[str | None]:
        """Count one page's URLs; return each task's domain, None where it has no one domain.

        ``lengths`` are the tasks' URL counts, in order; ``status_counts`` is
        ``Counter(statuses)``, already made. ``domain_of_prefix`` remembers the hosts
        already parsed; the caller decides how long it lives (a collection), so that
        counts kept for long do not keep it.
        """
        if not urls:
            return [None] * len(lengths)
        first = _HOST_PREFIX.match(urls[0])
        if first is not None and all(map(str.startswith, urls, repeat(first.group()))):
            domain = _domain(first.group(), domain_of_prefix)  # one host for the whole page
            for status, count in status_counts.items():
                self.counts[domain, status] += count
            return [domain if n else None for n in lengths]
        domains = [_one_domain(urls, start, n, domain_of_prefix) for start, n in _spans(lengths)]
        if all(domain is not None for domain, n in zip(domains, lengths, strict=True) if n):
            self._count_by_task(
                [domain for domain in domains if domain is not None],
                [n for n in lengths if n],
                statuses,
                status_counts,
            )
        else:
            self.counts.update(count_by_domain(urls, statuses, domain_of_prefix))
        return domains

    def _count_by_task(
        self,
        domains: list[str],
        lengths: list[int],
        statuses: list[str | None],
        status_counts: Counter[str | None],
    ) -> None:
        """Count URLs whose tasks each have one domain (``domains``, ``lengths``: a task each)."""
        counts = self.counts
        if len(status_counts) == 1:
            (status,) = status_counts
            for domain, length in zip(domains, lengths, strict=True):
                counts[domain, status] += length
            return
        for status in status_counts:
            column = chain.from_iterable(map(repeat, domains, lengths))
            chosen = Counter(compress(column, map(eq, statuses, repeat(status))))
            for domain, count in chosen.items():
                counts[domain, status] += count


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
    counts: Iterable[tuple[tuple[str, str | None], int]],
    status_of: Callable[[str | None], str],
    statuses: tuple[str, ...],
    max_domains: int,
) -> dict[str, dict[str, int]]:
    """Counts by domain and published status: the ``max_domains`` domains with most URLs
    (ties by name) in that order, then ``_other`` with the rest and the host-less ones."""
    by_domain: dict[str, dict[str, int]] = {}
    for (domain, raw), count in counts:
        row = by_domain.get(domain)
        if row is None:
            row = by_domain[domain] = dict.fromkeys(statuses, 0)
        row[status_of(raw)] += count
    other = by_domain.pop(OTHER_DOMAIN, None)
    ranked = sorted(by_domain.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    chosen = dict(ranked[:max_domains])
    for _, row in ranked[max_domains:]:
        other = other or dict.fromkeys(statuses, 0)
        for status, count in row.items():
            other[status] += count
    if other is not None:
        chosen[OTHER_DOMAIN] = other
    return chosen
