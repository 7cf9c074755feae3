"""`deqbench plot`: each PNG from a crafted training report (with its steps and traces
companions), failed rows left out while the rest is drawn, solve reports and missing data."""

from __future__ import annotations

import math

import matplotlib.image
import pandas as pd
import pytest

from deqbench.cli import main
from deqbench.report.plot import plot_report, run_labels
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.train.columns import EVAL_COLUMNS, STEP_COLUMNS, TRAIN_COLUMNS

BLANK_EXPLICIT = ["solver", "solver_options", "gradient", "gradient_options", "f_max_iter"]


def _row(run, **values):
    row = dict.fromkeys(TRAIN_COLUMNS)
    row.update(
        run=run,
        suite="memory",
        kind="train",
        model="mdeq-cpu-small",
        dataset="synthetic",
        image_size=32,
        batch_size=8,
        solver="anderson",
        solver_options="{}",
        gradient="ift",
        gradient_options="{}",
        f_max_iter=8,
        f_tol=1e-3,
        b_max_iter=8,
        model_options="{}",
        options="{}",
        seed=0,
        precision="fp32",
        status="completed",
        device="cpu",
    )
    row.update(values)
    if row["model"] == "resnet18":
        row.update(dict.fromkeys(BLANK_EXPLICIT))
    return row


def _metrics(top1, step_ms, saved):
    return {"eval_top1": top1, "step_ms_median": step_ms, "saved_mb": saved, "f_nfe_mean": 8.0}


def _report(tmp_path, rows, steps=True, traces=True, evals=True):
    """Write REPORT.csv (+ .steps.csv, .traces.csv and .evals.csv for every completed implicit
    run)."""
    path = tmp_path / "report.csv"
    frame = pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))
    frame.to_csv(path, index=False)
    ok = frame[frame.status == "completed"]
    if steps:
        step_rows = [
            {
                "run": r,
                "step": s,
                "epoch": 0,
                "mode": "unrolled" if s < 2 else "equilibrium",
                "loss": 2.3 / (1 + s),
                "lr": 1e-3,
            }
            for r in frame.run
            for s in range(6)
        ]
        pd.DataFrame(step_rows, columns=list(STEP_COLUMNS)).to_csv(
            tmp_path / "report.steps.csv", index=False
        )
    if traces:
        trace_rows = [
            {"run": r, "step": k, "rel_residual_median": 10.0**-k, "rel_residual_max": 1.0}
            for r in ok[ok.solver.notna()].run
            for k in range(5)
        ]
        pd.DataFrame(trace_rows, columns=list(TRACE_COLUMNS)).to_csv(
            tmp_path / "report.traces.csv", index=False
        )
    if evals:
        eval_rows = [
            {"run": r, "f_max_iter": k, "eval_nfe_mean": k, "eval_top1": 50 + k}
            for r in ok[ok.solver.notna()].run
            for k in (2, 4, 8)
        ]
        pd.DataFrame(eval_rows, columns=list(EVAL_COLUMNS)).to_csv(
            tmp_path / "report.evals.csv", index=False
        )
    return path


def _memory_suite_rows():
    rows, run = [], 0
    for gradient in ("ift", "jfb", "unrolled"):
        for iters in (4, 8, 16):
            saved = 3.0 * iters if gradient == "unrolled" else 3.0
            rows.append(
                _row(
                    run,
                    gradient=gradient,
                    f_max_iter=iters,
                    **_metrics(60 + iters, 10.0 * iters, saved),
                )
            )
            run += 1
    rows.append(_row(run, solver="broyden", **_metrics(70, 90.0, 3.0)))
    rows.append(_row(run + 1, model="resnet18", **_metrics(75, 20.0, 30.0)))
    return rows  # 9 implicit runs over 3 estimators × 3 caps, one broyden, one explicit


def _png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    return image


def test_every_plot_from_a_crafted_training_report(tmp_path):
    path = _report(tmp_path, _memory_suite_rows())
    drawn = {d.name: d for d in plot_report(path, tmp_path / "plots")}
    assert set(drawn) == {
        "accuracy_vs_step_time",
        "memory_vs_iterations",
        "convergence",
        "loss",
        "accuracy_vs_eval_nfe",
    }
    for d in drawn.values():
        assert d.path == tmp_path / "plots" / f"{d.name}.png", d.note
        _png(d.path)
    assert drawn["accuracy_vs_step_time"].runs == 11  # every run, the baseline too
    assert drawn["memory_vs_iterations"].runs == 11  # 10 implicit points + 1 baseline
    assert drawn["convergence"].runs == 10  # the implicit runs' traces
    assert drawn["loss"].runs == 11
    assert drawn["accuracy_vs_eval_nfe"].runs == 10  # the implicit runs' sweeps


def test_failed_rows_are_left_out_and_the_rest_is_drawn(tmp_path):
    rows = _memory_suite_rows()
    rows[1] = _row(1, f_max_iter=8, status="oom", error="CUDA out of memory")
    rows[5] = _row(5, gradient="jfb", f_max_iter=16, status="error", error="boom")
    path = _report(tmp_path, rows)
    drawn = {d.name: d for d in plot_report(path, tmp_path / "plots")}
    assert all(d.path is not None for d in drawn.values())
    assert drawn["accuracy_vs_step_time"].runs == 9
    assert drawn["memory_vs_iterations"].runs == 9
    assert drawn["convergence"].runs == 8


def test_missing_data_is_skipped_with_a_note(cli, tmp_path):
    rows = [_row(0, status="error", error="boom"), _row(1, model="resnet18", status="oom")]
    path = _report(tmp_path, rows, steps=False, traces=False)
    result = cli.invoke(main, ["plot", str(path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 5 and "no training steps in report.steps.csv" in result.output
    assert not list((tmp_path / "p").iterdir())


def test_cli_plot_writes_pngs_beside_the_report_by_default(cli, tmp_path):
    path = _report(tmp_path, _memory_suite_rows())
    result = cli.invoke(main, ["plot", str(path)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "(11 runs)" in result.output
    assert sorted(p.name for p in (tmp_path / "report-plots").iterdir()) == [
        "accuracy_vs_eval_nfe.png",
        "accuracy_vs_step_time.png",
        "convergence.png",
        "loss.png",
        "memory_vs_iterations.png",
    ]


def test_solve_report_draws_its_traces(tmp_path):
    path = tmp_path / "solve.csv"
    rows = [
        {
            "run": i,
            "suite": "s",
            "problem": "p",
            "cell": "tanh",
            "batch_size": 4,
            "solver": s,
            "max_iter": 20,
            "tol": 1e-6,
            "stop_mode": "rel",
            "status": st,
            "nfe": 10,
        }
        for i, (s, st) in enumerate(
            [("anderson", "converged"), ("broyden", "max_iter"), ("fixed-point", "diverged")]
        )
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    traces = [
        {"run": r, "step": k, "rel_residual_median": 0.5**k * (r + 1)}
        for r in (0, 1)
        for k in range(8)
    ]
    traces.append({"run": 2, "step": 0, "rel_residual_median": math.nan})
    pd.DataFrame(traces).to_csv(tmp_path / "solve.traces.csv", index=False)
    drawn = {d.name: d for d in plot_report(path, tmp_path / "p")}
    assert drawn["convergence"].runs == 2 and drawn["convergence"].path.exists()
    assert all(drawn[n].path is None for n in ("accuracy_vs_step_time", "memory_vs_iterations"))


def test_not_a_report_gives_one_line(cli, tmp_path):
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    result = cli.invoke(main, ["plot", str(other)])
    assert result.exit_code == 2 and "x.csv: not a deqbench report" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "varying,expected",
    [
        ({}, "run 0"),
        ({"gradient": ["ift", "jfb"]}, "run 0: ift"),
        ({"f_max_iter": [4, 8]}, "run 0: f_max_iter=4"),
    ],
)
def test_run_labels_name_what_varies(varying, expected):
    rows = [_row(i, **{k: v[i] for k, v in varying.items()}) for i in range(2)]
    assert run_labels(pd.DataFrame(rows), "train")[0] == expected


TINY_SUITE = """
[suite]
name = "tiny-plot"
kind = "train"
seed = 5
device = "cpu"

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[deq]
f_max_iter = 12

[recipe]
optimizer = "sgd"
lr = 0.05
epochs = 3
unrolled_warmup_steps = 2

[eval]
sweep = { f_max_iter = [2, 4] }

[matrix]
"deq.gradient" = ["ift", "jfb"]

[[include]]
"model.name" = "tiny-mlp"
"""


def test_plot_and_compare_a_report_the_training_runner_wrote(cli, tmp_path):
    """End to end on the tiny training toys: the runner's report and companions, as written."""
    from deqbench import plugins
    from deqbench.testing.train_toys import TrainToys

    plugins.reset_registry(("train-toys", TrainToys()))
    try:
        suite = tmp_path / "tiny.toml"
        suite.write_text(TINY_SUITE)
        out = tmp_path / "tiny.csv"
        args = ["run", str(suite), "--out", str(out), "--max-steps", "3", "--max-eval-batches", "1"]
        result = cli.invoke(main, [*args, "--set", "dataset.options.eval=16"])
        assert result.exit_code == 0, result.output
    finally:
        plugins.reset_registry()
    drawn = {d.name: d for d in plot_report(out, tmp_path / "plots")}
    # 2 DEQ runs (ift, jfb) and one explicit MLP; traces and sweeps exist for the DEQ runs only.
    assert {n: d.runs for n, d in drawn.items()} == {
        "accuracy_vs_step_time": 3,
        "memory_vs_iterations": 3,
        "convergence": 2,
        "loss": 3,
        "accuracy_vs_eval_nfe": 2,
    }
    for d in drawn.values():
        _png(d.path)
    same = cli.invoke(main, ["compare", str(out), str(out), "--fail-on-regression"])
    assert same.exit_code == 0, same.output
    assert "3 runs matched, 0 got worse" in same.output
