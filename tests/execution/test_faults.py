"""Faults in training suites, end to end: each becomes a row with a status and the suite goes on;
Ctrl-C records the run in progress as ``interrupted`` and exits 130; a second one exits at once.

The faults come from the toy plugin's ``tiny-deq`` options; ``leaky-mlp`` (below) leaves memory
behind in its process, to show that isolated runs do not carry it into the next run's figures.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from deqbench import plugins
from deqbench.cli import main
from deqbench.execution import worker
from deqbench.execution.checkpoint import checkpoint_path, load_checkpoint
from deqbench.hookspecs import hookimpl
from deqbench.report.results import read_report
from deqbench.solvers import Solver
from deqbench.testing.train_toys import TrainToys, tiny_mlp

LINUX = sys.platform.startswith("linux")
LEAK_MB = 256
HANG_TIMEOUT_S = 5  # above a worker's start-up on a loaded 2-core machine, so the run does hang

BASE = """
[suite]
name = "faults"
kind = "train"
seed = 3
device = "cpu"
threads = 1
checkpoint = false

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[deq]
f_max_iter = 12

[recipe]
optimizer = "adam"
lr = 0.01
steps = 3
"""

# -- a model that leaks: its memory stays as long as its process does ------------------------
_LEAKED: list[torch.Tensor] = []


def leaky_mlp(*, leak_mb: int = 0, **options):
    """`tiny_mlp`, after keeping ``leak_mb`` MiB of touched memory alive in a module global."""
    _LEAKED.append(torch.ones(leak_mb * 2**18))  # float32: 2**18 elements a MiB
    return tiny_mlp(**options)


class Leaky:
    """An in-process plugin registering ``leaky-mlp`` (it pickles by reference to the workers)."""

    @hookimpl
    def register_models(self, register):
        register("leaky-mlp", leaky_mlp, description="tiny-mlp that leaks memory")


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()), ("leaky", Leaky()))
    yield registry
    plugins.reset_registry()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- 1. every fault in turn, each run in its own worker ---------------------------------------
FAULTS = """
[[include]]
"model.options" = { fail_at_step = 1 }

[[include]]
"model.options" = { nan_at_step = 1 }

[[include]]
"model.options" = { oom_at_step = 1 }

[[include]]
"model.options" = { hang_at_step = 1 }
"suite.timeout" = "{timeout}s"
"suite.checkpoint" = true
"suite.checkpoint_every" = 1
"suite.keep_checkpoints" = true

[[include]]
"model.options" = { crash_at_step = 1 }

[[include]]
"model.options" = {}
"""


@pytest.mark.skipif(not LINUX, reason="the hang and the crash use Linux-only mechanisms")
def test_each_fault_is_a_row_and_the_suite_goes_on(toys, cli, tmp_path):
    # run 0 is the base: a leaky-mlp that keeps LEAK_MB alive until its process ends
    base = BASE.replace('name = "tiny-deq"', 'name = "leaky-mlp"\noptions = { leak_mb = %d }')
    text = base % LEAK_MB + FAULTS.replace("{timeout}", str(HANG_TIMEOUT_S))
    text = text.replace('"model.options" =', '"model.name" = "tiny-deq"\n"model.options" =')
    suite = write(tmp_path / "faults.toml", text)
    out = tmp_path / "faults.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    frame = read_report(out)
    assert frame["run"].tolist() == list(range(7))
    assert frame["model"].tolist() == ["leaky-mlp"] + ["tiny-deq"] * 6
    statuses = ["completed", "error", "diverged", "oom", "timeout", "crashed", "completed"]
    assert frame["status"].tolist() == statuses
    rows = frame.set_index("status", drop=False)
    assert rows.loc["error", "error"] == "RuntimeError: tiny-deq fails at step 1 as asked"
    assert "nan at step 1" in rows.loc["diverged", "error"]
    assert rows.loc["oom", "error"].startswith("CUDA out of memory.")
    assert "simulated by tiny-deq" in rows.loc["oom", "error"]
    assert f"exceeded its timeout of {HANG_TIMEOUT_S}s" in rows.loc["timeout", "error"]
    assert "SIGSEGV" in rows.loc["crashed", "error"]
    # the timeout: the run got past step 0 and hung in step 1, where SIGKILL ended it in time
    hung = load_checkpoint(checkpoint_path(out, 4))
    assert hung["state"]["step"] == 1
    assert HANG_TIMEOUT_S <= rows.loc["timeout", "wall_s"] < HANG_TIMEOUT_S + 7
    # the last run completed with metrics, and its steps were written
    last = frame.iloc[6]
    assert last["steps_done"] == 3 and math.isfinite(last["train_loss_final"])
    assert math.isfinite(last["eval_loss"]) and 0 <= last["eval_top1"] <= 100
    steps = read_report(out.with_name("faults.steps.csv"))
    assert steps[steps.run == 6]["step"].tolist() == [0, 1, 2]
    # fresh workers: the memory run 0 leaked in its process is not in the last run's peak
    # (in one process, the 256 MiB stay resident and count in every later run's peak)
    assert frame.iloc[0]["rss_peak_mb"] - last["rss_peak_mb"] > LEAK_MB / 2
    assert not worker._LIVE  # every worker was reaped


# -- 2. Ctrl-C in a real subprocess -----------------------------------------------------------
CTRL_C = (
    BASE
    + """
[[include]]
"model.options.delay_s" = 0.5
"recipe.steps" = 60

[[include]]
"model.name" = "tiny-mlp"
"""
)


def _parents() -> dict[int, int]:
    """pid → parent pid of every process that is not a zombie."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rpartition(")")[2].split()[:2]
            if state != "Z":
                table[int(entry.name)] = int(ppid)
    return table


def _descendants(pid: int) -> dict[int, int]:
    """The live descendants of ``pid``, each with its parent."""
    table, found, frontier = _parents(), {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in table.items():
            if ppid == parent and child not in found:
                found[child] = ppid
                frontier.append(child)
    return found


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _has_run_0(report: Path) -> bool:
    try:
        return 0 in read_report(report)["run"].tolist()
    except Exception:  # not there yet, or only its header
        return False


@pytest.mark.skipif(not LINUX, reason="reads the process tree from /proc")
def test_ctrl_c_records_the_run_in_progress_and_exits_130(tmp_path):
    suite = write(tmp_path / "c.toml", CTRL_C)
    out = tmp_path / "c.csv"
    env = dict(os.environ, DEQBENCH_PLUGINS="deqbench.testing.train_toys:TrainToys")
    log = (tmp_path / "log.txt").open("w+")
    cmd = [sys.executable, "-m", "deqbench", "run", str(suite), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: _has_run_0(out) or proc.poll() is not None, 60, "run 0's row")
        assert proc.poll() is None, "the suite ended before run 1"
        # run 1's worker: a grandchild (the forkserver, a child of the suite, forks it)
        _wait_for(
            lambda: any(p != proc.pid for p in _descendants(proc.pid).values()), 30, "a worker"
        )
        alive = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGINT)  # the suite process only, not its group
        start = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    assert code == 130, output
    assert took < 5, output
    assert "Traceback" not in output
    frame = read_report(out)
    assert frame["run"].tolist() == [0, 1]
    assert frame["status"].tolist() == ["completed", "interrupted"]
    assert frame.iloc[1]["error"] == "interrupted by the user"
    # no worker (nor forkserver) outlives the suite
    _wait_for(lambda: not set(alive) & set(_parents()), 10, f"the suite's children {alive} to end")


# -- 3. a second Ctrl-C exits at once ----------------------------------------------------------
SECOND_CTRL_C = """
import os, signal, sys, time
from deqbench.execution.interrupt import DeferredInterrupt

def sigint():
    os.kill(os.getpid(), signal.SIGINT)

with DeferredInterrupt() as calm:  # not armed: a Ctrl-C is only noted
    sigint()
    time.sleep(0.2)
    print("noted", calm.pending, calm.taken, flush=True)

with DeferredInterrupt() as sigint_handler:
    sigint_handler.armed = True
    try:
        sigint()
        time.sleep(5)
    except KeyboardInterrupt:
        print("caught", sigint_handler.armed, flush=True)
    print(time.time(), flush=True)  # the second Ctrl-C's moment
    sigint()
    time.sleep(5)
    print("not reached", flush=True)
"""


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    script = write(tmp_path / "twice.py", SECOND_CTRL_C)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    ended = time.time()
    assert done.returncode == 130, done.stdout + done.stderr
    *lines, second = done.stdout.splitlines()
    assert lines == ["noted True True", "caught False"]
    assert ended - float(second) < 3  # at once, not after the 5 s sleep
    assert "not reached" not in done.stdout and "Traceback" not in done.stderr


# -- 4. a bad timeout ---------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "--set"])
def test_a_bad_timeout_is_one_clear_line(toys, cli, tmp_path, where):
    text, extra = BASE, []
    if where == "file":
        text = BASE.replace("threads = 1", 'threads = 1\ntimeout = "2x"')
    else:
        extra = ["--set", 'suite.timeout="2x"']
    suite = write(tmp_path / "t.toml", text)
    out = tmp_path / "t.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(suite) in lines[0] and "suite.timeout" in lines[0] and "'2x'" in lines[0]
    assert all(form in lines[0] for form in ("seconds", "'90s'", "'45m'", "'2h'", "'1h30m'"))
    assert not out.exists()


# -- 5. isolate = false: the same faults, in this process ---------------------------------------
IN_PROCESS = """
[[include]]
"model.options" = { fail_at_step = 1 }

[[include]]
"model.options" = { oom_at_step = 1 }

[[include]]
"model.options" = { delay_s = 0.25 }
"recipe.steps" = 400
"suite.timeout" = "1.5s"
"""


def test_faults_without_isolation_are_rows_too(toys, cli, tmp_path, monkeypatch):
    def no_worker(*args, **kwargs):
        raise AssertionError("isolate = false started a worker")

    monkeypatch.setattr(worker, "run_isolated", no_worker)
    text = BASE.replace('name = "tiny-deq"', 'name = "tiny-deq"\noptions = { nan_at_step = 1 }')
    suite = write(tmp_path / "in.toml", text + IN_PROCESS)
    out = tmp_path / "in.csv"
    result = cli.invoke(
        main, ["run", str(suite), "--out", str(out), "--set", "suite.isolate=false"]
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    frame = read_report(out)
    assert frame["status"].tolist() == ["diverged", "error", "oom", "timeout"]
    assert frame.iloc[1]["error"] == "RuntimeError: tiny-deq fails at step 1 as asked"
    assert "simulated by tiny-deq" in frame.iloc[2]["error"]
    # No worker to kill in-process: the run stops at the first step past its timeout, and
    # keeps the steps it did.
    late = frame.iloc[3]
    assert late["error"].startswith("exceeded its timeout of 1.5s (1.5 s) at step ")
    assert 1 <= late["steps_done"] < 400 and late["wall_s"] < 30
    steps = read_report(out.with_name("in.steps.csv"))
    assert (steps["run"] == 3).sum() == late["steps_done"]


# -- solve suites: opt-in isolation ---------------------------------------------------------------
class SegfaultingSolver:
    """A solver plugin with a bug in its native code: it kills its own process."""

    def __init__(self, **options) -> None:
        pass

    def __call__(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGSEGV)


class PastBudgetSolver(Solver):
    """A solver plugin with a bug in its Python: it observes once past its budget. The compiled
    bookkeeping does not check bounds, so this once ended the whole suite with SIGABRT."""

    def solve(self, f, z0, monitor):
        z = z0
        while monitor.nfe <= monitor.budget:  # off by one, and deaf to what observe says
            fz = f(z)
            monitor.observe(z, fz)
            z = monitor.hold_diverged(fz, z)


class SegfaultPlugin:
    @hookimpl
    def register_solvers(self, register):
        register("segfaults", SegfaultingSolver)
        register("past-budget", PastBudgetSolver)


SOLVE = """
[suite]
name = "solve-faults"
repeats = 1
warmup = 0
isolate = true

[[problems]]
name = "p"
cell = "tanh"
batch_size = 2
input_shape = [8]
options = { dim = 8, spectral_norm = 0.5 }

[matrix]
solver = ["fixed-point", "segfaults", "anderson"]
max_iter = [20]
"""


@pytest.mark.skipif(not LINUX, reason="SIGSEGV semantics")
def test_an_isolated_solve_suite_survives_a_segfaulting_solver(cli, tmp_path):
    plugins.reset_registry(("segfault", SegfaultPlugin()))
    try:
        path = tmp_path / "s.toml"
        path.write_text(SOLVE)
        out = tmp_path / "r.csv"
        result = cli.invoke(main, ["run", str(path), "--out", str(out)])
    finally:
        plugins.reset_registry()
    assert result.exit_code == 1, result.output  # a crashed row is a failure; nothing else
    frame = read_report(out)
    assert frame["solver"].tolist() == ["fixed-point", "segfaults", "anderson"]
    assert frame["status"].tolist() == ["converged", "crashed", "converged"]
    assert "SIGSEGV" in frame["error"][1]
    assert frame["nfe"][2] > 0  # the run after the crash measured normally


@pytest.mark.skipif(not LINUX, reason="SIGSEGV semantics")
@pytest.mark.parametrize("in_process", [False, True], ids=["default", "in-process"])
def test_a_solver_that_misuses_its_monitor_is_an_error_row(cli, tmp_path, in_process):
    # Solve suites isolate their runs by default: the segfault is a crashed row, and the suite
    # goes on. The misuse is a clear error either way (in-process, without the segfault).
    solvers = ["fixed-point", "past-budget", "anderson"]
    if not in_process:
        solvers.insert(1, "segfaults")
    text = SOLVE.replace("isolate = true\n", "isolate = false\n" if in_process else "")
    listed = "[" + ", ".join(f'"{name}"' for name in solvers) + "]"
    text = text.replace('["fixed-point", "segfaults", "anderson"]', listed)
    plugins.reset_registry(("segfault", SegfaultPlugin()))
    try:
        path = tmp_path / "s.toml"
        path.write_text(text)
        out = tmp_path / "r.csv"
        result = cli.invoke(main, ["run", str(path), "--out", str(out)])
    finally:
        plugins.reset_registry()
    assert result.exit_code == 1, result.output
    frame = read_report(out).set_index("solver")
    expected = {"fixed-point": "converged", "past-budget": "error", "anderson": "converged"}
    if not in_process:
        expected["segfaults"] = "crashed"
        assert "SIGSEGV" in frame.loc["segfaults", "error"]
    assert frame["status"].to_dict() == expected
    assert frame.loc["past-budget", "error"] == (
        "MonitorMisuse: observe: evaluation 21 is outside the budget of 20 evaluations "
        "(rule 1: return as soon as observe returns True)"
    )
