"""Label values the summary publishes, bounded in length and still unique.

A ``Url``, ``TaskId`` or domain longer than the limit becomes a shorter value: a prefix, a
mark and a hash of the whole value (see :func:`bounded_label_value`). One that holds a
signature this process made (a gateway may echo one into a TaskId or a URL) becomes the
mark of a redaction and the hash, so that no label shows it.
"""

import hashlib
from typing import Final

from exporter.gateway.redaction import REDACTED, SIGNATURES

_CUT_MARK: Final = "…"
_HASH_BYTES: Final = 8  # 16 hex digits: two cut values of one target will not collide
# What a cut value ends with: the mark, then the hash of the whole value.
_CUT_TAIL_BYTES: Final = len(_CUT_MARK.encode()) + 2 * _HASH_BYTES
_UTF8_MAX_BYTES: Final = 4  # per character; the most a str of n characters can take is 4n
_SIGNATURE_LENGTH: Final = 40  # hex digits: a shorter value holds none


def bounded_label_value(value: str, max_bytes: int) -> str:
    """``value`` if it fits in ``max_bytes`` UTF-8 bytes, else a prefix, ``…`` and a hash.

    The prefix is cut on a character boundary and the hash is of the whole value, so two
    long values that share their first ``max_bytes`` bytes stay two label values. The
    result is never longer than ``max_bytes`` (which must exceed the tail's 19 bytes).
    A value holding a remembered signature, in any case, is ``<redacted>…`` and the hash.
    """
    if len(value) >= _SIGNATURE_LENGTH and SIGNATURES.holds(value):
        return REDACTED + _CUT_MARK + _digest(value.encode("utf-8", "surrogatepass"))
    if len(value) * _UTF8_MAX_BYTES <= max_bytes:  # most values: no encoding needed
        return value
    # surrogatepass: a lone surrogate from a JSON escape must not fail the collection.
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return value
    prefix = encoded[: max_bytes - _CUT_TAIL_BYTES].decode("utf-8", "ignore")
    return prefix + _CUT_MARK + _digest(encoded)


def _digest(encoded: bytes) -> str:
    return hashlib.blake2b(encoded, digest_size=_HASH_BYTES).hexdigest()
