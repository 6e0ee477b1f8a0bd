"""Secrets kept out of whatever the client says: signatures remembered, gateway text scrubbed.

A gateway may echo a request's signature, in any case, in any later answer or header, and
a transport error's message may hold a URL or request details. Everything the client puts
in an :class:`~exporter.gateway.outcomes.ApiError` or a log line passes through here first,
as it enters (the message, the request id, a redirect's target): whatever prints an error
later (the log, ``--check-config``, ``--once``) holds nothing to leak.
"""

import re
import threading
from typing import Final
from urllib.parse import urlsplit, urlunsplit

# A SHA-1 signature is 40 hex digits; a run of at least that many in a gateway's text
# is redacted whatever it is, so that no signature, however old, gets through in any case.
_HEX_RUN: Final = re.compile(r"[0-9A-Fa-f]{40,}")
_SIGNATURE_LENGTH: Final = 40
_REMEMBERED_SIGNATURES: Final = 4096
REDACTED: Final = "<redacted>"
_TUNNEL_FAILED: Final = "Tunnel connection failed: "
_TUNNEL_TEXT_LIMIT: Final = 120
_REDIRECT_TARGET_LIMIT: Final = 120


class SignatureMemory:
    """The signatures the client made lately, to redact them wherever they turn up.

    A gateway may echo any signature it received, in any case, in any later answer; a
    log filter needs to know them all. Bounded: the oldest are forgotten first, by
    which time no gateway still holds their requests. Safe to use from many threads.
    """

    def __init__(self, capacity: int = _REMEMBERED_SIGNATURES) -> None:
        self._known: dict[str, None] = {}  # in the order first made: the oldest first
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, signature: str) -> None:
        """Add one signature (hex, any case)."""
        with self._lock:
            self._known[signature.lower()] = None
            if len(self._known) > self._capacity:
                del self._known[next(iter(self._known))]

    def __contains__(self, signature: object) -> bool:
        return isinstance(signature, str) and signature.lower() in self._known

    def redact(self, text: str) -> str:
        """``text`` with every hex run that holds a remembered signature replaced."""
        return _HEX_RUN.sub(self._redact_run, text)

    def holds(self, text: str) -> bool:
        """Whether ``text`` holds a remembered signature, in any case; cheaper than
        comparing :meth:`redact`'s result, for text that holds none (the usual case)."""
        return any(self._known_run(match.group()) for match in _HEX_RUN.finditer(text))

    def _redact_run(self, match: re.Match[str]) -> str:
        return REDACTED if self._known_run(match.group()) else match.group()

    def _known_run(self, run: str) -> bool:
        run = run.lower()
        with self._lock:
            return any(
                run[start : start + _SIGNATURE_LENGTH] in self._known
                for start in range(len(run) - _SIGNATURE_LENGTH + 1)
            )


SIGNATURES: Final = SignatureMemory()
"""Every signature any client of this process made lately: the log filter's list."""


def describe(error: BaseException) -> str:
    """A short, secret-free description of a transport error.

    requests and urllib3 put URLs, and sometimes request details, in their messages;
    we send no secret in the URL, but name only the exception's kind and its root cause.
    A proxy that refuses the tunnel is the exception: its status line is what an operator
    needs (``ProxyError: Tunnel connection failed: 403 Forbidden``), scrubbed as gateway
    text is.
    """
    cause: BaseException = error
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    kind = type(error).__name__
    if isinstance(cause, OSError) and cause.strerror:
        return f"{kind}: {cause.strerror}"
    text = str(cause)
    if type(cause) is OSError and text.startswith(_TUNNEL_FAILED):  # http.client's words
        return f"{kind}: {scrub(text)[:_TUNNEL_TEXT_LIMIT]}"
    root = type(cause).__name__
    return kind if root == kind else f"{kind} ({root})"


def scrub(text: str, *secrets: str) -> str:
    """Gateway text made fit for a log line: printable, and free of any secret in any case.

    Every run of 40 or more hex digits goes, not only the signatures we know: a
    gateway may echo a request's signature in any case, from any earlier page.
    """
    text = "".join(char if char.isprintable() else "?" for char in text)
    for secret in secrets:
        if secret:
            text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    return _HEX_RUN.sub(REDACTED, text)


def redirect_target(location: str | None, *secrets: str) -> str | None:
    """Where a redirect's ``Location`` points, fit for an error message; None if it has none.

    Its scheme, host, port and path only, scrubbed: the user-info, query and fragment may
    carry anything (a gateway may put a signature there). What an operator needs to
    correct ``API_URL`` is the rest.
    """
    try:
        parts = urlsplit((location or "").strip())
    except ValueError:  # an unbalanced "[" in the host
        return None
    host = parts.netloc.rpartition("@")[2]
    target = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return scrub(target, *secrets)[:_REDIRECT_TARGET_LIMIT] or None
