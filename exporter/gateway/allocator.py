"""Memory freed after a large answer goes back to the system, so that RSS follows what is held.

glibc's malloc serves a request of at least its mmap threshold (128 KiB at start) with a
mapping of its own, unmapped when freed; but the first time such a mapping is freed, it
raises the threshold to that size (up to 32 MiB) and the trim threshold to twice that.
From then on, an answer read whole (a page of 14.5 MB, its 1 MiB reads, the URLs decoded
from it) is served from the reading thread's arena (glibc keeps up to 8 per core, and
every page thread has one), and an arena keeps what is freed at its top below the trim
threshold. Measured with 14.5 MB pages failing every collection at the byte cap (both
kinds of task, 2 cores): RSS climbed 158 -> 381 MB over 8 scrapes while Python held less
than 30 MB after each; with the thresholds kept at their starting values it stays at
107 -> 118 MB, within the pod's limit, and a steady scrape costs no more.

That is not the whole of it. What a large collection frees in small pieces (the URLs
decoded from its pages, the tasks of a failed full sync) leaves holes in the arenas of the
threads that read it, which glibc gives back only from an arena's top. Measured with the
same failing pages: RSS after each scrape still crept 109 -> 169 MB over 20 scrapes
(107 -> 165 MB with the cycle collector running), past the 150 MB docs/operating.md
promises, while the Python objects held stayed flat. ``malloc_trim(0)`` hands every free
page of every arena back (about 10 ms with such a heap): called after a collection that
read much, RSS stayed at 93 to 104 MB over 16 scrapes.

Nothing of the sort exists in a library, and no setting reaches either but the
environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), which a deployment
may forget: hence these calls. Without glibc (musl, macOS) they do nothing.
"""

import ctypes
import functools
from collections.abc import Callable
from typing import Final

# mallopt(3)'s parameters, and glibc's starting value of both thresholds.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_THRESHOLD: Final = 128 * 1024


@functools.cache
def return_large_buffers() -> bool:
    """Keep glibc's mmap and trim thresholds where they start (once per process).

    True if done; False without glibc's ``mallopt``.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Setting either turns off glibc's moving of both.
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def give_back_free_memory() -> bool:
    """Return every free page of every malloc arena to the system (glibc's ``malloc_trim``).

    For after a collection that read much; it costs milliseconds. True if done.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
