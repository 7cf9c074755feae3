"""Run isolation: one run in its own worker process, so nothing it does takes the suite down.

`run_isolated` calls ``target(emit, *args)`` in a fresh child process and turns how the child
ends into a `WorkerOutcome`: a return value (``ok``), an exception (``error``), a
``torch.OutOfMemoryError`` (``oom``), a run past its time limit, killed with SIGKILL even inside
a C++ kernel (``timeout``), or a process that died, of a segfault or the kernel's OOM killer
(``crashed``). Each run also starts with fresh memory, so no run's figures carry the last one's.

Children come from a forkserver on Linux (a clean process that has preloaded the heavy
imports, so a child starts in milliseconds), else from spawn; never from a plain fork of the
suite, since CUDA and OpenMP do not survive one. A child SIGKILLs itself once the suite is
gone, so even a SIGKILLed suite leaves no run behind. The child takes the parent's ``sys.path``,
working directory and environment as they are at the call, as a spawned child would.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing as mp
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from deqbench.report.schema import RunStatus
from deqbench.suite.duration import format_duration

# deqbench.execution.runner: the target of every isolated run (`execute_in_worker`).
# torch._dynamo: the first optimizer a process builds imports it (~3 s a fresh worker otherwise).
# deqbench.solvers.warmup: the solvers' compiled kernels (~1 s a solve run otherwise).
PRELOAD = [
    "deqbench.execution.runner",
    "deqbench.runs.train.run",
    "deqbench.runs.solve.backward",
    "deqbench.execution.worker",
    "torch._dynamo",
    "deqbench.solvers.warmup",
]
POLL_S = 0.1  #: how often the parent looks at the deadline and the child while waiting
EXIT_WAIT_S = 30.0  #: how long a child that sent its result may take to exit (CUDA teardown)
DEATH_WAIT_S = 5.0  #: how long a child that closed its end without a result may take to end
KILL_WAIT_S = 30.0  #: how long to wait for a SIGKILLed child to be gone
_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerOutcome:
    """How one isolated run ended."""

    status: str  #: "ok", or how the run failed: a `RunStatus` (error, oom, timeout, crashed)
    value: Any = None  #: what target returned, when status == "ok"
    error: str = ""  #: one line for the report's error column (empty when ok)
    exitcode: int | None = None  #: the child's exit code (negative: killed by that signal)


def start_method() -> str:
    """``"forkserver"`` on Linux, else ``"spawn"``."""
    if sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


_CTX = mp.get_context(start_method())
if _CTX.get_start_method() == "forkserver":
    _CTX.set_forkserver_preload(PRELOAD)

#: Children started and not yet reaped, for `kill_live_workers`.
_LIVE: set[BaseProcess] = set()


# -- the child -------------------------------------------------------------------------------
def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


def _die_with_parent(conn: Connection) -> None:
    """SIGKILL this process once the suite is gone (best effort), even if it is stuck in C.

    PR_SET_PDEATHSIG alone is not enough: under the forkserver the parent is the server, which
    outlives a SIGKILLed suite while any child lives (children hold its liveness pipe). So a
    thread also waits on the result pipe: only the suite holds its read end, and poll reports
    POLLERR on a write end once no reader is left.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if not hasattr(select, "poll"):
        return
    fd = os.dup(conn.fileno())  # its own copy: the child closes ``conn`` when done

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: POLLERR and POLLHUP are always reported
        while not poller.poll():
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="deqbench-orphan-watch", daemon=True).start()


def _kernels_may_thread() -> None:
    """Let the solver kernels split big states over threads again in a child of the
    forkserver: `deqbench.solvers.host_kernels` turns them off in every forked child, since
    GNU OpenMP cannot start threads in a child of a process that started its own, but the
    forkserver never did (`deqbench.solvers.warmup` keeps to the single-threaded loops)."""
    kernels = sys.modules.get("deqbench.solvers.host_kernels")
    if kernels is None or _CTX.get_start_method() != "forkserver":
        return  # not loaded yet (threads allowed), or a spawned child (never forked)
    from numba.np.ufunc import parallel

    if not getattr(parallel, "_is_initialized", True):
        kernels._threads = True


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _child_main(conn: Connection, payload: bytes, context: dict[str, Any]) -> None:
    """The child's body: adopt the parent's context, run the target, send one result."""
    # A terminal's Ctrl-C reaches the whole process group; the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(conn)
    # The run's own processes (DataLoader workers) fork, as in any Linux process. It also makes
    # the locks made here (numba's init lock) unnamed, so a killed run leaks no semaphore that
    # the resource tracker would warn about at exit.
    if sys.platform.startswith("linux"):
        mp.set_start_method("fork", force=True)
    _kernels_may_thread()

    def emit(obj: Any) -> None:
        conn.send(("event", obj))

    try:
        # Before unpickling: the target's module may only be importable from the parent's path.
        sys.path[:] = context["sys_path"]
        os.chdir(context["cwd"])
        os.environ.clear()
        os.environ.update(context["env"])
        target, args, plugins, threads = pickle.loads(payload)
        if threads is not None:
            torch.set_num_threads(threads)
        if plugins:
            from deqbench.plugins import reset_registry

            reset_registry(*plugins)
        result = ("ok", target(emit, *args), "")
    except torch.OutOfMemoryError as exc:
        result = (RunStatus.OOM, None, _one_line(str(exc)))
    except Exception as exc:
        result = (RunStatus.ERROR, None, _one_line(f"{type(exc).__name__}: {exc}"))
    if result[0] == RunStatus.OOM:
        _free_memory()  # outside the except block, so the traceback's tensors are gone
    try:
        conn.send(("result", *result))
    except Exception as exc:  # the value does not pickle
        reason = _one_line(f"the run's result could not be sent: {type(exc).__name__}: {exc}")
        conn.send(("result", RunStatus.ERROR, None, reason))
    conn.close()


# -- the parent ------------------------------------------------------------------------------
def _kill(process: BaseProcess) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        process.kill()


def _reap(process: BaseProcess) -> int | None:
    """Kill the child if it still runs, wait for it, release it, and return its exit code."""
    if process.pid is None:  # never started
        return None
    if process.exitcode is None:
        _kill(process)
    process.join(KILL_WAIT_S)
    exitcode = process.exitcode
    if exitcode is not None:  # a child stuck in the kernel stays listed, for kill_live_workers
        _LIVE.discard(process)
        process.close()
    return exitcode


def kill_live_workers() -> None:
    """SIGKILL every child still running (before the suite exits at once on a second Ctrl-C)."""
    for process in list(_LIVE):
        _kill(process)


def _death_message(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f"the run's process exited with code {exitcode} without sending a result"
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "an unknown signal"
    message = f"the run's process died of signal {number} ({name})"
    if number == signal.SIGKILL:
        message += " (the kernel's OOM killer sends this when memory runs out)"
    return message


def run_isolated(
    target: Callable[..., Any],
    args: tuple = (),
    *,
    timeout_s: float | None = None,
    on_event: Callable[[Any], None] | None = None,
    plugins: Sequence[tuple[str, object]] = (),
    threads: int | None = None,
) -> WorkerOutcome:
    """Run ``target(emit, *args)`` in a child process and say how it ended.

    ``target`` and ``args`` must pickle (a module-level function). Each ``emit(obj)`` in the
    child calls ``on_event(obj)`` here, in order. ``timeout_s`` counts from the child's start;
    past it the child is SIGKILLed. ``plugins`` are ``(name, plugin)`` pairs re-added to the
    child's registry (in-process plugins exist only where they were added); ``threads`` sets
    ``torch.set_num_threads`` there. Any exception here while waiting (``KeyboardInterrupt``
    from a Ctrl-C handler, or one raised by ``on_event``) kills the child and propagates.
    """
    payload = pickle.dumps((target, tuple(args), tuple(plugins), threads))
    context = {"sys_path": list(sys.path), "cwd": os.getcwd(), "env": dict(os.environ)}
    reader, writer = _CTX.Pipe(duplex=False)
    process = _CTX.Process(target=_child_main, args=(writer, payload, context), name="deqbench-run")
    result: tuple | None = None
    timed_out = False
    try:
        process.start()
        _LIVE.add(process)
        writer.close()  # the child's end: once the child is gone, reads here see end-of-file
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while result is None:
            wait = POLL_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    timed_out = True
                    break
            if reader.poll(wait):
                try:
                    message = reader.recv()
                except EOFError:
                    break
                if message[0] == "event":
                    if on_event is not None:
                        on_event(message[1])
                else:
                    result = message
            elif not process.is_alive() and not reader.poll(0):
                break
        if not timed_out:  # let it finish exiting (or dying) by itself before any kill
            process.join(EXIT_WAIT_S if result is not None else DEATH_WAIT_S)
    except BaseException:
        _kill(process)
        raise
    finally:
        writer.close()
        reader.close()
        exitcode = _reap(process)
    if result is not None:
        _, status, value, error = result
        return WorkerOutcome(status, value, error, exitcode)
    if timed_out:
        assert timeout_s is not None
        limit = f"{format_duration(timeout_s)} ({timeout_s:g} s)"
        return WorkerOutcome(
            RunStatus.TIMEOUT, error=f"exceeded its timeout of {limit}", exitcode=exitcode
        )
    return WorkerOutcome(RunStatus.CRASHED, error=_death_message(exitcode), exitcode=exitcode)
