"""Settings of the C allocator for work streamed in 1 MiB chunks on several threads.

glibc serves each allocation of 128 KiB or more with a fresh `mmap` until a free raises
that bar, and gives freed memory at the top of a heap back to the kernel soon after. A
checkout decodes every 1 MiB chunk into new buffers (zstd output, XOR, un-grouping) on the
pool's threads, each with its own heap, so it kept asking the kernel for zeroed pages and
handing them back: rebuilding a 498 MB fp32 checkpoint four times took 540,000-675,000
minor page faults and 2.0-2.3 s of system time, against 45,000 and 0.6-0.7 s with the
settings below (peak RSS 204-207 MB against 211-219 MB).

Allocations under 4 MiB come from the heaps, and each heap keeps up to 32 MiB of freed
memory for the next chunk; whole tensors (larger) are still mapped and unmapped directly.
Only glibc has `mallopt`; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def tune() -> bool:
    """Apply the settings; True when the C library took them."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
