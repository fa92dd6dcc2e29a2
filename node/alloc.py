"""Allocator settings for the bulk data path.

Every chunk read, sealed, opened or received is a fresh buffer of 256-512 KiB. With its default
settings, glibc hands buffers of that size back to the kernel as soon as they are freed (by ``mmap``
until its adaptive threshold catches up, and by trimming the heap whenever 128 KiB or more sit free at
its top), so the next buffer is faulted in and zeroed again, page by page. Adding 1 GiB cost ~85,000
page faults and ~10% of the process's CPU that way.

:func:`keep_freed_buffers` raises both thresholds, so such buffers come from the heap and freed ones
are reused: ~5,000 faults per GiB, and the same peak RSS (the few buffers in flight are all it keeps).
Other C libraries, and other systems, are left as they are.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20  # above the largest block (and yamux frame) we allocate per message
TRIM_THRESHOLD = 8 << 20  # keep up to this much free memory at the top of the heap


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
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
