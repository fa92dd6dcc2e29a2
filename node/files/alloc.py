"""Allocator settings for the bulk data path.

Every chunk read, sealed, opened or received is a fresh buffer of 256-512 KiB. With its default
settings, glibc hands buffers of that size back to the kernel as soon as they are freed (by ``mmap``
until its adaptive threshold catches up, and by trimming the heap whenever 128 KiB or more sit free at
its top), so the next buffer is faulted in and zeroed again, page by page. Adding 1 GiB cost ~85,000
page faults and ~10% of the process's CPU that way.

:func:`keep_freed_buffers` raises both thresholds, so such buffers come from the heap and freed ones
are reused: ~5,000 faults per GiB. Each arena keeps up to ``TRIM_THRESHOLD`` free, so the number of
arenas is capped too (glibc makes up to 8 per core, one per busy thread; a daemon has many threads).
Other C libraries, and other systems, are left as they are.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20  # above the largest block (and yamux frame) we allocate per message
TRIM_THRESHOLD = 8 << 20  # keep up to this much free memory at the top of each arena's heap
ARENA_MAX = 2  # arenas (each keeps its own free memory) for all threads: the GIL serializes them anyway


def keep_freed_buffers() -> bool:
    """Tune glibc's malloc for many short-lived large buffers; returns False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0 and changes nothing
    settings = (
        (M_ARENA_MAX, ARENA_MAX),
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    )
    return all([bool(mallopt(param, value)) for param, value in settings])
