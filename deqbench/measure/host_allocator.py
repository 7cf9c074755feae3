"""Holding glibc's allocator steady for the length of a benchmark process.

glibc's malloc adapts two thresholds as a process runs. When a block it had mapped on its own
is freed, blocks up to that size (at most 32 MiB) come from the heap from then on, and free
memory at the top of the heap goes back to the system only past twice that size. Until a large
enough block has been freed, a conv cell that frees its 2 MB intermediates at the end of each
evaluation hands them back to the system (unmapped, or trimmed off the heap) and faults them in
again on the next: hundreds of page faults per evaluation. After it, none. So whichever runs
come first in a process pay for it, and the order of a suite's runs would decide their timings:
on the conv problem of the solver suite, Broyden run first in a process had f fault 65 760 times
per solve (1.89× a bare loop), and run after two Anderson solvers 0 to 1 times (1.71×).

`steady_thresholds` fixes both thresholds at the values glibc settles to, so every run sees
the allocator of a process that has been running for a while, whatever ran before it.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameters (malloc.h) and the most glibc's adaptive thresholds reach on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
# Settings a user may have made themselves, which we leave alone.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_state: str | None = None


def steady_thresholds() -> str:
    """Fix glibc's mmap and trim thresholds for the rest of the process (once), and say what
    the allocator runs with: for the report's metadata."""
    global _state
    if _state is None:
        _state = _steady()
    return _state


def _steady() -> str:
    if platform.libc_ver()[0] != "glibc":
        return "not glibc: left as it is"
    user = [name for name in _USER_SETTINGS if name in os.environ]
    if user:
        return f"glibc, as set in the environment ({', '.join(user)})"
    libc = ctypes.CDLL(None)
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    if not (mapped and trimmed):  # mallopt returns 0 for a setting it refuses
        return "glibc: mallopt refused, left as it is"
    mmap_mib, trim_mib = MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20
    return f"glibc, fixed: mmap threshold {mmap_mib} MiB, trim threshold {trim_mib} MiB"
