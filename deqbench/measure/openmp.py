"""How torch's OpenMP threads wait between ops: chosen by the ``deqbench run`` command from how
busy the machine is, and recorded in a report's metadata.

torch's CPU ops run on GNU OpenMP's thread pool (the libgomp torch loads), and so do the
solvers' threaded kernels: numba's OpenMP layer binds to that same libgomp
(`deqbench.solvers.host_kernels`). libgomp's workers spin for a while after each op before they
sleep (its default), or sleep at once (``OMP_WAIT_POLICY=PASSIVE``). Spinning is the faster on
idle cores and by far the slower on cores that other work is using, where the spinning workers
burn the time the working threads need (docs/performance.md, "Threads and shared cores").
Results do not depend on it, only speed.

libgomp reads the policy once, as torch loads. So `choose_wait_policy`, called by ``deqbench
run`` before torch is imported, looks at the machine for a moment: when other work keeps a
core's worth busy, it sets the passive policy for this process and the suite's worker
processes (which inherit the environment). A policy the user set wins, and a program that only
imports deqbench keeps its environment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

#: The variables that set how libgomp's threads wait.
SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: Cores kept busy by other work, at the command's start, above which threads wait passively.
BUSY_CORES = 0.5
#: How long the command looks at the machine before deciding, seconds.
SAMPLE_S = 0.25

_choice = ""  # what `choose_wait_policy` did, for `describe`


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(
    sample_s: float = SAMPLE_S, read: Callable[[], tuple[int, int] | None] = cpu_times
) -> float | None:
    """How many cores other processes keep busy, measured over ``sample_s`` (this process is
    asleep meanwhile); None where it cannot be read."""
    before = read()
    time.sleep(sample_s)
    after = read()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def choose_wait_policy(busy: Callable[[], float | None] = busy_cores) -> str:
    """For the ``deqbench run`` command's process, before torch loads: set
    ``OMP_WAIT_POLICY=PASSIVE`` when other work keeps at least `BUSY_CORES` cores busy, unless
    the user set the policy. Does nothing once torch is loaded (libgomp has read its setting;
    the command's tests run in such a process). Returns what it decided, as `describe` says."""
    global _choice
    if "torch" in sys.modules or any(name in os.environ for name in SETTINGS):
        return describe()
    cores = busy()
    if cores is not None and cores >= BUSY_CORES:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _choice = f" (set by deqbench: {cores:.1f} cores busy with other work at the start)"
    elif cores is not None:
        _choice = f" (deqbench: {cores:.1f} cores busy with other work at the start)"
    return describe()


def describe() -> str:
    """How OpenMP threads wait in this process and the workers it starts (which inherit its
    environment): the settings in the environment, or libgomp's default, and why."""
    given = [f"{name}={os.environ[name]}" for name in SETTINGS if name in os.environ]
    if given:
        return ", ".join(given) + _choice
    return "libgomp's default (spin, then sleep)" + _choice
