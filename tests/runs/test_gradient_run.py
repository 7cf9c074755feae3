"""Solve suites with gradient estimators: the gradient columns against exact references."""

from __future__ import annotations

import pandas as pd
import torch

from deqbench.cli import main
from deqbench.execution import worker
from deqbench.execution.runner import execute_in_worker
from deqbench.report.results import read_report
from deqbench.runs.kind import Job
from deqbench.runs.solve import backward as gradient_run
from deqbench.runs.solve.kind import SOLVE
from deqbench.suite.load import load_suite

SUITE = """
[suite]
name = "grads"
dtype = "float64"
repeats = 1
warmup = 0

[[problems]]
name = "tanh"
cell = "tanh"
batch_size = 4
input_shape = [16]
options = { dim = 16, spectral_norm = 0.8 }

[matrix]
solver = ["anderson"]
max_iter = [{iters}]
tol = [1e-12]
gradient = ["ift", "jfb", "unrolled"]

[gradient_options.ift]
solver = ["fixed-point", "gmres"]
max_iter = [200]
tol = [1e-10]
"""


def _run(cli, tmp_path, iters: int, *options: str):
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / f"s{iters}.toml"
    path.write_text(SUITE.replace("{iters}", str(iters)))
    out = tmp_path / f"r{iters}.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return read_report(out)


def test_gradient_columns(cli, tmp_path):
    frame = _run(cli, tmp_path, 60)
    ift = frame[frame.gradient == "ift"]
    assert len(ift) == 2 and (ift["b_status"] == "converged").all()
    assert (ift["b_nfe"] <= 200).all() and (ift["b_rel_residual_max"] <= 1e-10).all()
    assert (ift["grad_rel_error"] < 1e-6).all() and (ift["grad_cosine"] > 1 - 1e-9).all()
    jfb = frame[frame.gradient == "jfb"].iloc[0]
    # One step of a map with ‖J‖ ≤ 0.8 is a real approximation, not the exact gradient.
    assert 0 < jfb["grad_cosine"] < 0.9999 and jfb["grad_rel_error"] > 1e-3
    assert jfb["b_status"] != jfb["b_status"] or jfb["b_status"] == ""  # empty: no solve
    unrolled = frame[frame.gradient == "unrolled"].iloc[0]
    # 60 unrolled steps of a 0.8-contraction reach the equilibrium: same gradient as IFT.
    assert unrolled["grad_rel_error"] < 1e-5
    assert unrolled["saved_mb"] > 10 * ift["saved_mb"].max()
    assert (frame["spectral_radius_median"] < 0.8 + 1e-9).all()
    assert (frame["step_ms_median"] >= frame["backward_ms_median"]).all()


def test_saved_bytes_flat_for_ift_and_growing_for_unrolled(cli, tmp_path):
    runs = {n: _run(cli, tmp_path, n) for n in (5, 15, 30)}
    saved = {
        g: {n: f[f.gradient == g]["saved_mb"].iloc[0] for n, f in runs.items()}
        for g in ("ift", "unrolled")
    }
    assert saved["ift"][5] == saved["ift"][30]  # flat in the forward iteration count
    growth = saved["unrolled"]
    # Linear in depth: every layer saves the same, so 15 more layers add 1.5× what 10 add.
    assert abs((growth[30] - growth[15]) / (growth[15] - growth[5]) - 1.5) < 1e-9


def test_isolated_runs_share_one_exact_gradient_per_problem(cli, tmp_path, monkeypatch):
    # Each run has a worker of its own (the default); the problem's first gradient run solves
    # the exact gradient, and the suite hands it to the later runs' workers.
    real, calls = worker.run_isolated, []

    def spy(target, args=(), **options):
        outcome = real(target, args, **options)
        if target is execute_in_worker:
            calls.append((sorted(args[1].shared), sorted(outcome.value.shared)))
        return outcome

    monkeypatch.setattr(worker, "run_isolated", spy)
    isolated = _run(cli, tmp_path, 60)
    assert calls == [([], ["tanh"])] + [(["tanh"], [])] * 3  # (handed in, computed)
    monkeypatch.setattr(worker, "run_isolated", real)
    in_process = _run(cli, tmp_path / "in", 60, "--set", "suite.isolate=false")
    columns = ["grad_cosine", "grad_rel_error", "b_nfe", "nfe"]  # last bits differ by process
    pd.testing.assert_frame_equal(isolated[columns], in_process[columns], rtol=1e-9)


def test_a_worker_handed_the_exact_gradient_does_not_solve_it_again(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.replace("{iters}", "60"))
    suite = load_suite(path)
    first, second = suite.runs[0], suite.runs[2]  # ift, then jfb, on the same problem
    _, _, new = _in_worker(suite, first, tmp_path)
    assert set(new) == {"tanh"}

    def solve_again(*args, **kwargs):
        raise AssertionError("the exact gradient was solved again")

    monkeypatch.setattr(gradient_run, "reference_gradient", solve_again)
    metrics, _, again = _in_worker(suite, second, tmp_path, new)
    assert again == {} and metrics["grad_cosine"] < 0.9999


def _in_worker(suite, run, tmp_path, shared=None):
    """One run as its worker executes it: (metrics, traces, exact gradients it computed)."""
    job = Job(suite, run, torch.device("cpu"), tmp_path / "r.csv", shared=shared or {})
    out = execute_in_worker(None, "solve", SOLVE.for_worker(job))
    return out.metrics, out.companions["traces.csv"], out.shared
