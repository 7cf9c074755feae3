"""`deqbench run` end to end through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import deqbench
from deqbench import plugins
from deqbench.cli import main
from deqbench.measure.host_allocator import steady_thresholds
from deqbench.report.results import read_report
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.solve.columns import COLUMNS
from deqbench_plugins.problems import TanhCell

ROOT = Path(__file__).resolve().parents[1]


def test_solvers_suite_writes_csv_meta_and_traces(cli, tmp_path):
    out = tmp_path / "solvers.csv"
    args = ["run", str(ROOT / "suites/solvers.toml"), "--out", str(out), "--limit", "40"]
    only = ["--only", "tanh-gauss-0.9", "--only", "tanh-orth-0.99"]
    result = cli.invoke(main, [*args, *only, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert list(frame.columns) == list(COLUMNS)
    assert set(frame["problem"]) == {"tanh-gauss-0.9", "tanh-orth-0.99"}
    assert len(frame) == 2 * len(set(frame["solver"])) and "anderson" in set(frame["solver"])
    assert frame["status"].isin(["converged", "max_iter"]).all()
    assert (frame["nfe"] <= 40).all() and (frame["repeats"] == 1).all()  # --limit: a smoke run
    # one repeat: the median ratio is the ratio of the two timings
    cost = frame["nfe"] * frame["solve_ms_median"] / frame["bare_ms_median"]
    assert ((frame["solve_cost_f_evals"] - cost).abs() < 1e-6 * cost).all()
    easy = frame[frame.problem == "tanh-gauss-0.9"]
    assert (easy["rel_residual_max"] <= 1e-4).all() and (easy["converged_frac"] == 1).all()
    traces = read_report(out.with_name("solvers.traces.csv"))
    assert list(traces.columns) == list(TRACE_COLUMNS)
    # one trace row per run per step, as many steps as evaluations
    assert traces.groupby("run").size().tolist() == frame.sort_values("run")["nfe"].tolist()
    meta = json.loads(out.with_name("solvers.meta.json").read_text())
    assert meta["torch"] == torch.__version__ and meta["cpu_count"] >= 1
    assert meta["plugins"]["deqbench"] and "problems" in meta["plugins"]
    assert meta["host_allocator"] == steady_thresholds()  # what the timings ran under
    assert "tanh-orth-0.99" in result.output  # the rich table


class _Exploding(TanhCell):
    """A cell that fails the way a buggy plugin or a full GPU does."""

    def __init__(self, error: str = "crash", **options) -> None:
        super().__init__(**options)
        self.error = error

    def forward(self, z, injection):
        if self.error == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if self.error == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("the cell broke")


class _Expansive(TanhCell):
    """z ↦ 2z + Ux: the iteration blows up."""

    def forward(self, z, injection):
        return (2 * z[0] + injection,)


class _FailingPlugin:
    """Registers the failing cells; a module-level class, so that isolated runs (the default)
    can send it to their workers."""

    @deqbench.hookimpl
    def register_cells(self, register):
        register("exploding", _Exploding)
        register("expansive", _Expansive)


@pytest.fixture
def failing_plugins(fresh_registry):
    plugins.reset_registry(("failing", _FailingPlugin()))
    yield


SUITE = """
[suite]
name = "fails"
repeats = 1
warmup = 0
{problems}
[matrix]
solver = ["fixed-point"]
max_iter = 60
"""


def _problem(name, cell, **options):
    opts = ", ".join(f"{k} = {json.dumps(v)}" for k, v in {"dim": 8, **options}.items())
    return (
        f'\n[[problems]]\nname = "{name}"\ncell = "{cell}"\nbatch_size = 2\n'
        f"input_shape = [8]\noptions = {{ {opts} }}\n"
    )


def test_failures_become_rows_and_the_suite_goes_on(cli, tmp_path, failing_plugins):
    problems = (
        _problem("crash", "exploding")
        + _problem("oom", "exploding", error="oom")
        + _problem("blowup", "expansive")
        + _problem("fine", "tanh", spectral_norm=0.5)
    )
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(problems=problems))
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 1, result.output  # some run ended in error
    frame = read_report(out).set_index("problem")
    assert frame.loc["crash", "status"] == "error"
    assert frame.loc["crash", "error"] == "RuntimeError: the cell broke"
    assert frame.loc["oom", "status"] == "oom" and "out of memory" in frame.loc["oom", "error"]
    assert pd_isna(frame.loc["crash", "nfe"])  # metrics left empty
    assert (
        frame.loc["blowup", "status"] == "diverged" and "diverged" in frame.loc["blowup", "error"]
    )
    assert frame.loc["fine", "status"] == "converged" and frame.loc["fine", "nfe"] > 0
    assert "Traceback" not in result.output


def test_interrupt_writes_the_run_and_stops(cli, tmp_path, failing_plugins):
    path = tmp_path / "s.toml"
    problems = _problem("stop", "exploding", error="interrupt") + _problem("never", "tanh")
    path.write_text(SUITE.format(problems=problems))
    out = tmp_path / "r.csv"
    # In the suite's process, where a KeyboardInterrupt inside a run is Ctrl-C.
    in_process = ["--set", "suite.isolate=false"]
    result = cli.invoke(main, ["run", str(path), "--out", str(out), *in_process])
    assert result.exit_code == 130
    frame = read_report(out)
    assert frame["status"].tolist() == ["interrupted"]


def test_cuda_request_without_cuda_is_a_clear_error(cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli.invoke(main, ["run", str(ROOT / "suites/solvers.toml"), "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_only_unknown_problem(cli):
    result = cli.invoke(main, ["run", str(ROOT / "suites/solvers.toml"), "--only", "conv-esy"])
    assert result.exit_code == 2 and "did you mean 'conv-easy'" in result.output


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


_NAN_PLUGINS = '''
import sys, types
import torch
import deqbench
from deqbench import plugins
from deqbench.cli import main
from deqbench.solvers.base import Solver
from deqbench_plugins.problems import TanhCell


class NanCell(TanhCell):
    """A cell plugin whose map is NaN everywhere."""

    def forward(self, z, injection):
        return (z[0] * float("nan"),)


class NanSteps(Solver):
    """A solver plugin whose steps go NaN after the first."""

    def solve(self, f, z0, monitor):
        z = z0
        while True:
            fz = f(z)
            if monitor.observe(z, fz):
                return
            z = monitor.hold_diverged(fz * float("nan"), z)


module = types.ModuleType("nans")


@deqbench.hookimpl
def register_cells(register):
    register("nan", NanCell)


@deqbench.hookimpl
def register_solvers(register):
    register("nan-steps", NanSteps)


module.register_cells, module.register_solvers = register_cells, register_solvers
plugins.reset_registry(("nans", module))
main(sys.argv[1:])
'''


def test_nan_cells_and_solvers_end_as_diverged_rows_and_the_suite_goes_on(tmp_path):
    # in a child process: a NaN reaching LAPACK (eigvals) used to end it with SIGSEGV; its
    # runs in that process (the script's plugins cannot reach a worker)
    import subprocess
    import sys

    script = tmp_path / "nans.py"
    script.write_text(_NAN_PLUGINS)
    problems = _problem("nan-cell", "nan") + _problem("fine", "tanh", spectral_norm=0.5)
    path = tmp_path / "s.toml"
    path.write_text(
        SUITE.format(problems=problems).replace(
            'solver = ["fixed-point"]', 'solver = ["nan-steps", "fixed-point"]'
        )
    )
    out = tmp_path / "r.csv"
    args = ["run", str(path), "--out", str(out), "--set", "suite.isolate=false"]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-1500:], done.stderr[-1500:])
    frame = read_report(out)
    status = {(r.problem, r.solver): r.status for r in frame.itertuples()}
    assert status == {
        ("nan-cell", "nan-steps"): "diverged",
        ("nan-cell", "fixed-point"): "diverged",
        ("fine", "nan-steps"): "diverged",
        ("fine", "fixed-point"): "converged",
    }
    assert frame["run"].tolist() == [0, 1, 2, 3]


def test_nan_cell_options_are_refused(cli, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        SUITE.format(problems=_problem("p", "tanh")).replace(
            "dim = 8", "dim = 8, injection_scale = nan"
        )
    )
    result = cli.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "problems[0].options: injection_scale must be a finite number" in result.output


def test_a_smoke_run_keeps_the_declared_max_iter(cli, tmp_path):
    path = tmp_path / "s.toml"
    text = SUITE.format(problems=_problem("p", "tanh", spectral_norm=0.99, spectrum="orthogonal"))
    path.write_text(text.replace("max_iter = 60", "max_iter = [40, 100, 2]"))
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), "--limit", "3"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert frame["max_iter"].tolist() == [40, 100, 2]  # the runs stay told apart
    assert frame["smoke_max_iter"].tolist()[:2] == [3, 3]
    assert pd_isna(frame["smoke_max_iter"].iloc[2])  # already below the cap: no smoke cap
    assert frame["nfe"].tolist() == [3, 3, 2]


def test_a_diverged_solve_is_a_result_not_a_failure_but_is_said(cli, tmp_path, failing_plugins):
    # A solve suite measures solvers on problems; diverging on a hard one is an outcome (like
    # max_iter): exit 0, with a warning line, so that CI sees it.
    problems = _problem("blowup", "expansive") + _problem("fine", "tanh", spectral_norm=0.5)
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(problems=problems))
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_report(out)["status"].tolist() == ["diverged", "converged"]
    assert "warning: 1 run(s) diverged" in result.stderr
    assert "not counted as a failed run" in result.stderr


@pytest.mark.parametrize(
    "option",
    [["--max-steps", "3"], ["--max-eval-batches", "1"], ["--max-steps", "3", "--limit", "2"]],
)
def test_training_smoke_options_on_a_solve_suite_are_refused(cli, tmp_path, option):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(problems=_problem("p", "tanh", spectral_norm=0.5)))
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), *option])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert f"{path}: {option[0]} applies to training suites" in message
    assert "a solve suite takes --limit and --only" in message
    assert not out.exists()  # nothing ran


def test_smoke_timings_are_flagged_in_the_row_and_marked_in_the_table(cli, tmp_path):
    # --limit times each run once, unwarmed: flagged even where the cap changed nothing
    path = tmp_path / "s.toml"
    text = SUITE.format(problems=_problem("p", "tanh", spectral_norm=0.5))
    path.write_text(text.replace("max_iter = 60", "max_iter = [40, 2]"))
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), "--limit", "3"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert frame["smoke"].tolist() == [3, 3] and frame["repeats"].tolist() == [1, 1]
    rows = [line for line in result.output.splitlines() if line.startswith("│ p ")]
    assert len(rows) == 2 and all(line.count("†") == 2 for line in rows)  # solve ms, ×bare/NFE
    assert "† a smoke run (--limit): timed from one unwarmed repeat" in result.output
    # no terminal: a plain line per finished run, smoke-marked
    assert "run 2/2 p max_iter solver=fixed-point NFE=2 " in result.output
    assert result.output.count("(smoke: timed from one unwarmed repeat)") == 2
    full = cli.invoke(main, ["run", str(path), "--out", str(tmp_path / "f.csv")])
    assert full.exit_code == 0, full.output
    assert read_report(tmp_path / "f.csv")["smoke"].isna().all() and "†" not in full.output


def test_progress_every_on_a_solve_suite_is_refused_in_one_line(cli, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(problems=_problem("p", "tanh", spectral_norm=0.5)))
    result = cli.invoke(main, ["run", str(path), "--progress-every", "5"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: {path}: --progress-every applies to training suites; a solve suite prints a "
        "line per finished run"
    )
