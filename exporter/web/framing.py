"""Request framing that a proxy in front may read otherwise, refused with 400.

cheroot's header parser keeps only the last of repeated headers, so the raw header lines
are checked here: a Content-Length that is not plain digits, differing repeated
Content-Lengths, Content-Length with Transfer-Encoding, folded framing headers, and
whitespace before a header's colon (RFC 9112 6.1-6.3).
"""

import re
from typing import Any

from cheroot import server as cheroot_server

_DIGITS = re.compile(rb"[0-9]+")


class FramingCheckedHeaderReader(cheroot_server.HeaderReader):
    """cheroot's header parser, refusing framing that a proxy in front may read otherwise."""

    def __call__(self, rfile: Any, hdict: Any = None) -> Any:
        """Parse the headers; raise ValueError (cheroot answers 400) for unsafe framing."""
        recorder = _LineRecorder(rfile)
        headers = super().__call__(recorder, hdict)
        _check_framing(recorder.lines)
        return headers


class _LineRecorder:
    """Passes ``readline`` through and keeps each line, for ``_check_framing``."""

    def __init__(self, rfile: Any) -> None:
        self._rfile = rfile
        self.lines: list[bytes] = []

    def readline(self, size: int | None = None) -> bytes:
        """Read one line and remember it."""
        line: bytes = self._rfile.readline(size)
        self.lines.append(line)
        return line


def _check_framing(lines: list[bytes]) -> None:
    """Raise ValueError for framing that proxies may read differently (RFC 9112 6.1-6.3).

    The raw lines are read because cheroot's parser keeps only the last of repeated headers.
    """
    lengths: list[bytes] = []
    chunked = False
    previous = b""
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if previous in (b"content-length", b"transfer-encoding"):
                raise ValueError(f"Folded {previous.decode().title()} header.")
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            continue  # the blank line that ends the head
        if name != name.rstrip(b" \t"):
            raise ValueError("Whitespace before a header's colon.")
        previous = name.lower()
        if previous == b"content-length":
            lengths.append(value.strip(b" \t\r\n"))
        chunked = chunked or previous == b"transfer-encoding"
    if lengths and chunked:
        raise ValueError("Content-Length together with Transfer-Encoding.")
    if not all(_DIGITS.fullmatch(length) for length in lengths):
        raise ValueError("Content-Length is not a plain decimal number.")
    if len({int(length) for length in lengths}) > 1:
        raise ValueError("Differing Content-Length headers.")
