"""Giving the C allocator's free pages back to the system, once a second during a phase.

glibc's malloc keeps pages that were freed inside its heaps until the top of a heap is free, so
a load generator's RSS followed the fragmentation of its busiest moments rather than what it
holds: the NATS publisher process's grew by ~0.8 MB per million messages over four minutes at
20,000 msg/s, and stayed flat after its first minute once trimmed (0.1-0.3 ms a call).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library: glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def give_back_free_pages() -> None:
    """Return every wholly free page of the allocator's heaps (a no-op without glibc)."""
    if _TRIM is not None:
        _TRIM(0)
