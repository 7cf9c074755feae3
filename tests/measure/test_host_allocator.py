"""deqbench.measure.host_allocator: glibc's thresholds are fixed once, and a user's own settings
win."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from deqbench.measure import host_allocator

_libc, _version = platform.libc_ver()
glibc = pytest.mark.skipif(
    _libc != "glibc" or tuple(map(int, _version.split(".")[:2])) < (2, 33),
    reason="glibc's malloc, with mallinfo2 (2.33 or later)",
)

# In a fresh process: where a 16 MiB block comes from (glibc counts mapped blocks in `hblkhd`,
# heap blocks in use in `uordblks`), and how much the heap (`arena`) gives back when it is freed.
PROBE = """
import ctypes, json, sys
from deqbench.measure.host_allocator import steady_thresholds

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
state = steady_thresholds() if sys.argv[1] == "steady" else "default"
before = libc.mallinfo2()
block = libc.malloc(16 << 20)  # straight from malloc: nothing else lands above it in the heap
ctypes.memset(block, 1, 16 << 20)
held = libc.mallinfo2()
libc.free(block)
freed = libc.mallinfo2()
print(json.dumps({
    "state": state,
    "mapped": held.hblkhd - before.hblkhd,
    "heap_used": held.uordblks - before.uordblks,
    "trimmed": held.arena - freed.arena,
}))
"""


def probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in host_allocator._USER_SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**environ, **env},
    )
    return json.loads(out.stdout)


MIB = 1 << 20


@glibc
def test_a_fresh_process_maps_a_16_mib_block_and_unmaps_it():
    """The default the module changes: the control for the next test."""
    got = probe("default")
    assert got["mapped"] >= 16 * MIB
    assert got["heap_used"] < MIB


@glibc
def test_steady_thresholds_serve_the_block_from_the_heap_and_keep_it():
    got = probe("steady")
    assert got["state"].startswith("glibc, fixed: mmap threshold 32 MiB, trim threshold 64 MiB")
    assert got["mapped"] < MIB
    assert got["heap_used"] >= 16 * MIB
    assert got["trimmed"] == 0  # 16 MiB free at the top is below the trim threshold


@glibc
def test_a_users_own_malloc_settings_are_left_alone():
    got = probe("steady", MALLOC_TRIM_THRESHOLD_="131072")
    assert got["state"] == "glibc, as set in the environment (MALLOC_TRIM_THRESHOLD_)"
    assert got["mapped"] >= 16 * MIB  # the mmap threshold was not touched


def test_the_state_is_settled_once(monkeypatch):
    calls = []
    monkeypatch.setattr(host_allocator, "_state", None)
    monkeypatch.setattr(host_allocator, "_steady", lambda: calls.append(1) or "settled")
    assert host_allocator.steady_thresholds() == "settled"
    assert host_allocator.steady_thresholds() == "settled"
    assert calls == [1]


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert host_allocator._steady() == "not glibc: left as it is"
