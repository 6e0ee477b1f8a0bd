"""A window's URLs counted by domain (the URL's host) and raw status, cheaply.

Parsing every URL's host is the cost, so it is paid once per distinct *host prefix*
(``scheme://host/``, up to the first ``/``, ``?`` or ``#`` after the host), which every
URL of a domain shares. A task's URLs usually are on one host: when every one starts
with the first one's (a C-level ``startswith`` pass tells), the task is counted by its
statuses, and no URL is matched one by one.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, repeat
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
                self.counts.update(found)
            else:  # a task's URLs usually share a host: counted by status, not URL by URL
                for status, count in Counter(statuses[start:stop]).items():
                    self.counts[domain, status] += count
            domains.append(domain)
        return domains


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
