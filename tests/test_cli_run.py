"""`deqbench run` end to end through click's CliRunner."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

import deqbench
from deqbench import plugins
from deqbench.cli import main
from deqbench.host_allocator import steady_thresholds
from deqbench.results import COLUMNS, TRACE_COLUMNS, read_report
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


@pytest.fixture
def failing_plugins(fresh_registry):
    module = types.ModuleType("failing")

    @deqbench.hookimpl
    def register_cells(register):
        register("exploding", _Exploding)
        register("expansive", _Expansive)

    module.register_cells = register_cells
    plugins.reset_registry(("failing", module))
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
    result = cli.invoke(main, ["run", str(path), "--out", str(out)])
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
