"""Run isolation: each way a worker process can end becomes the right outcome, and none leaks."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deqbench.execution import worker
from deqbench.execution.worker import kill_live_workers, run_isolated, start_method
from deqbench.suite.duration import format_duration, parse_duration
from deqbench.testing.train_toys import TrainToys, tiny_deq

LINUX = sys.platform.startswith("linux")
BIG = bytes(range(256)) * (20 * 2**20 // 256)  # 20 MiB, like a long run's step rows
OOM_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by tiny-deq)"
TOYS = [("train-toys", TrainToys())]


# -- targets: module-level, so they pickle by reference into the worker ----------------------
def counts(emit, n):
    for i in range(n):
        emit({"step": i})
    return {"n": n, "pid": os.getpid()}


def raises(emit):
    raise ValueError("bad\n   value " + "x" * 1000)


def raises_oom(emit):
    raise torch.OutOfMemoryError("CUDA out of memory.\n  Tried to allocate 2.00 GiB")


def hangs(emit):
    emit(os.getpid())
    while True:
        time.sleep(0.05)


def kills_itself(emit, signum):
    os.kill(os.getpid(), signum)
    time.sleep(30)


def returns_big(emit):
    emit(BIG[: 5 * 2**20])
    return BIG


def returns_unpicklable(emit):
    return lambda: 0


def looks_up_toy(emit):
    from deqbench.plugins import get_registry

    return get_registry().get("models", "tiny-deq").name


def reports_context(emit):
    return torch.get_num_threads(), os.getcwd(), os.environ.get("DEQBENCH_WORKER_TEST")


def solves_a_big_state(emit):
    """What a solve run finds in its worker: which kernels were loaded before it ran anything,
    whether numba's thread pool had started, and an Anderson solve on a state big enough for
    the threaded loops (how many threaded calls it made)."""
    from numba.np.ufunc import parallel

    from deqbench.solvers import Anderson, host_kernels

    names = ("observe", "copy_rows", "anderson_weights", "broyden_secant")
    loaded = {name: len(getattr(host_kernels, name).overloads) for name in names}
    loaded["anderson_record"] = len(host_kernels.anderson_record.serial.overloads)
    started = parallel._is_initialized
    calls = []
    kernel = host_kernels.anderson_record
    threaded = kernel.threaded
    kernel.threaded = lambda *args: (calls.append(1), threaded(*args))
    z0 = torch.zeros(host_kernels.GRAIN // 256, 256)
    result = Anderson()(lambda z: torch.tanh(0.5 * z + 1), z0, max_iter=20, tol=1e-6)
    return loaded, started, len(calls), result.status.value


def _raise_alarm(signum, frame):
    raise RuntimeError("a Python signal handler ran")


def trains_toy(emit, options, alarm_at=None):
    """Build tiny-deq through the registry and run training forwards, emitting each step.

    ``alarm_at``: just before that step, arm a 0.2 s SIGALRM whose handler raises, so a hang
    that a Python handler could end would become an error row."""
    from deqbench.plugins import get_registry

    model = (
        get_registry()
        .get("models", "tiny-deq")
        .obj(num_classes=3, in_channels=1, image_size=4, **options)
    )
    model.train()
    signal.signal(signal.SIGALRM, _raise_alarm)
    x = torch.randn(2, 1, 4, 4)
    for step in range(3):
        emit(step)
        if step == alarm_at:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
        model(x)
    return model.modes


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan's reaper may be slow or absent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return not LINUX


def _wait_gone(pid: int, within_s: float = 10.0) -> bool:
    end = time.monotonic() + within_s
    while not _gone(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


# -- outcomes --------------------------------------------------------------------------------
def test_start_method_is_forkserver_on_linux_and_never_fork():
    assert start_method() == ("forkserver" if LINUX else "spawn")
    assert worker._CTX.get_start_method() == start_method()


def test_ok_returns_the_value_and_delivers_events_in_order():
    events = []
    outcome = run_isolated(counts, (5,), on_event=events.append)
    assert outcome.status == "ok" and outcome.error == "" and outcome.exitcode == 0
    assert outcome.value["n"] == 5 and outcome.value["pid"] != os.getpid()
    assert events == [{"step": i} for i in range(5)]
    assert not worker._LIVE


def test_an_exception_is_an_error_row_of_one_line():
    outcome = run_isolated(raises)
    assert outcome.status == "error" and outcome.value is None
    assert outcome.error.startswith("ValueError: bad value xxx")
    assert "\n" not in outcome.error and len(outcome.error) == 500


def test_out_of_memory_is_an_oom_row():
    outcome = run_isolated(raises_oom)
    assert outcome.status == "oom"
    assert outcome.error == "CUDA out of memory. Tried to allocate 2.00 GiB"


def test_a_hang_past_its_timeout_is_killed():
    events = []
    start = time.monotonic()
    outcome = run_isolated(hangs, timeout_s=1.5, on_event=events.append)
    elapsed = time.monotonic() - start
    assert outcome.status == "timeout" and 1.4 < elapsed < 10
    assert outcome.error == "exceeded its timeout of 1.5s (1.5 s)"
    assert outcome.exitcode == -signal.SIGKILL
    assert _gone(events[0]) and not worker._LIVE


def test_a_segfault_is_a_crashed_row():
    outcome = run_isolated(kills_itself, (signal.SIGSEGV,))
    assert outcome.status == "crashed" and outcome.exitcode == -11
    assert outcome.error == "the run's process died of signal 11 (SIGSEGV)"


def test_sigkill_names_the_oom_killer():
    outcome = run_isolated(kills_itself, (signal.SIGKILL,), timeout_s=20)
    assert outcome.status == "crashed" and outcome.exitcode == -9
    assert outcome.error == (
        "the run's process died of signal 9 (SIGKILL) "
        "(the kernel's OOM killer sends this when memory runs out)"
    )


def test_a_big_result_and_event_arrive_intact():
    events = []
    outcome = run_isolated(returns_big, on_event=events.append, timeout_s=60)
    assert outcome.status == "ok" and outcome.value == BIG
    assert events == [BIG[: 5 * 2**20]]


def test_a_result_that_does_not_pickle_is_an_error_row():
    outcome = run_isolated(returns_unpicklable)
    assert outcome.status == "error"
    assert outcome.error.startswith("the run's result could not be sent: ")


def test_in_process_plugins_are_re_added_in_the_child(fresh_registry):
    fresh_registry.add_plugin(TrainToys(), "train-toys")  # the parent's registry is not enough
    missing = run_isolated(looks_up_toy)
    assert missing.status == "error" and "unknown model 'tiny-deq'" in missing.error
    assert run_isolated(looks_up_toy, plugins=TOYS).value == "tiny-deq"


def test_threads_cwd_and_environment_reach_the_child(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # after the forkserver started: it must not be its cwd
    monkeypatch.setenv("DEQBENCH_WORKER_TEST", "seen")
    outcome = run_isolated(reports_context, threads=2)
    assert outcome.value == (2, str(tmp_path), "seen")


# -- interruption ----------------------------------------------------------------------------
def test_keyboard_interrupt_while_waiting_kills_the_child():
    pids = []

    def interrupt(pid):
        pids.append(pid)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_isolated(hangs, on_event=interrupt, timeout_s=30)
    assert _gone(pids[0]) and not worker._LIVE


def test_kill_live_workers_kills_a_running_child():
    pids = []

    def kill_all(pid):
        pids.append(pid)
        assert len(worker._LIVE) == 1
        kill_live_workers()

    outcome = run_isolated(hangs, on_event=kill_all, timeout_s=30)
    assert outcome.status == "crashed" and outcome.exitcode == -9
    assert _gone(pids[0]) and not worker._LIVE


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux only")
def test_the_child_dies_with_a_sigkilled_suite(tmp_path):
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_worker\n"
        "from deqbench.execution.worker import run_isolated\n"
        "run_isolated(test_worker.hangs, on_event=lambda pid: print(pid, flush=True))\n"
    )
    suite = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(suite.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "the suite's worker never started"
        child = int(suite.stdout.readline())
        assert not _gone(child)
        suite.kill()
        suite.wait(10)
        assert _wait_gone(child), "the worker outlived its suite"
    finally:
        suite.kill()
        suite.wait(10)
        suite.stdout.close()


# -- durations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("45m", 2700),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (" 1h 30m 15s ", 5415),
        ("2H", 7200),
        ("2d", 172800),
        ("120", 120),
        (90, 90),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "abc", "2x", "h", "1h30", "1.5 hours", "-5", "0s", 0, "inf", "nan", True, None]
)
def test_parse_duration_refuses_bad_values(text):
    with pytest.raises(ValueError, match=r"invalid duration .*'90s', '45m', '2h', '1h30m'"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(7200, "2h"), (5400, "1h30m"), (90, "1m30s"), (45, "45s"), (1.5, "1.5s"), (176400, "2d1h")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# -- the toy model's faults ------------------------------------------------------------------
def test_tiny_deq_simulated_oom_is_an_oom_row():
    events = []
    outcome = run_isolated(trains_toy, ({"oom_at_step": 1},), on_event=events.append, plugins=TOYS)
    assert (outcome.status, outcome.error) == ("oom", OOM_MESSAGE)
    assert events == [0, 1]


def test_tiny_deq_crash_is_a_crashed_row():
    events = []
    outcome = run_isolated(
        trains_toy, ({"crash_at_step": 2},), on_event=events.append, plugins=TOYS
    )
    assert outcome.status == "crashed" and outcome.exitcode == -11
    assert events == [0, 1, 2]


@pytest.mark.skipif(not LINUX, reason="the uninterruptible hang is a pthread deadlock")
def test_tiny_deq_hang_ignores_python_signals_and_times_out():
    events = []
    outcome = run_isolated(
        # 6 s: the first forward of a fresh worker also builds the solver's kernels (slow
        # under load); the hang comes after it.
        trains_toy,
        ({"hang_at_step": 1}, 1),
        on_event=events.append,
        plugins=TOYS,
        timeout_s=6,
    )
    assert outcome.status == "timeout", outcome.error  # not "error": the alarm handler never ran
    assert events == [0, 1]


def test_tiny_deq_delay_and_unchanged_defaults():
    x = torch.randn(2, 1, 4, 4)
    slow = tiny_deq(num_classes=3, in_channels=1, image_size=4, delay_s=0.2).train()
    start = time.perf_counter()
    slow(x)
    slow(x)
    assert time.perf_counter() - start >= 0.4
    plain = tiny_deq(num_classes=3, in_channels=1, image_size=4).train()
    assert torch.isfinite(plain(x)).all() and plain.modes == ["equilibrium"]
    plain.eval()(x)  # evaluation forwards neither sleep nor count
    assert plain.modes == ["equilibrium"]


@pytest.mark.skipif(not LINUX, reason="forkserver")
def test_workers_start_with_the_solver_kernels_loaded_and_may_thread():
    # The forkserver loads the kernels (deqbench.solvers.warmup) without starting numba's
    # thread pool, so its children start with them and may still split big states over
    # threads, as the suite's own process does (GNU OpenMP could not start threads in a child
    # of a process that had).
    outcome = run_isolated(solves_a_big_state, threads=2, timeout_s=120)
    assert outcome.status == "ok", outcome.error
    loaded, started, threaded_calls, status = outcome.value
    assert all(loaded.values()), loaded
    assert not started
    assert status == "converged" and threaded_calls > 0
