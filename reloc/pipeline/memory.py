"""Keep large freed buffers for reuse (glibc only).

OpenCV's SIFT allocates and frees some 200 MB of pyramid images per 1024-px query. With glibc's
default, adaptive thresholds those buffers are often fresh ``mmap`` regions, so every query pays
the page faults and zeroing again: 150 ms of SIFT instead of 110 ms on the 2-core development
machine (BENCHMARKS.md, "Lean maps"). Fixed thresholds serve buffers under 64 MB from the heap and
return freed heap memory to the system only beyond 512 MB, so a long run keeps its high-water
mark of memory instead of faulting it in again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 512 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds once per process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
