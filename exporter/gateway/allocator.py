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

Nothing of the sort exists in a library, and no setting reaches it but the environment
(``MALLOC_MMAP_THRESHOLD_``), which a deployment may forget: hence this call. Without
glibc's ``mallopt`` (musl, macOS) it does nothing.
"""

import ctypes
import functools
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
