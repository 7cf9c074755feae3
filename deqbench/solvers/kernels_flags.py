"""The numba flags the solvers' kernel modules (``kernels_*``) share."""

from __future__ import annotations

from numba import njit

# Reassociation (SIMD partial sums) and fused multiply-adds, but IEEE semantics for inf and NaN:
# a diverging sample must show as one.
SUMS = {"reassoc", "contract"}
# Row functions are inlined into their loops (a call per row cost 20 % on small states); the
# loops carry the same flags, since an inlined body takes its caller's. A row function lives in
# the module of its loops: numba's on-disk cache checks only the source file of the function it
# compiled, so a loop cached in another module would outlive an edit of its row. For the same
# reason, after changing a flag here, clear the kernel modules' caches (``__pycache__/*.nb*``).
row_function = njit(cache=True, fastmath=SUMS, inline="always")
