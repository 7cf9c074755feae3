"""`deqbench run` on a tiny training suite, end to end through click's CliRunner."""

from __future__ import annotations

import json
import textwrap

import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.report import tables
from deqbench.report.noise import wilson_interval
from deqbench.report.results import read_report
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.train.columns import STEP_COLUMNS, TRAIN_COLUMNS
from deqbench.runs.train.kind import TRAIN_KEYS
from deqbench.testing.train_toys import TrainToys

SUITE = """
[suite]
name = "tiny-cli"
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

[matrix]
"deq.gradient" = ["ift", "jfb"]

[[include]]
"model.name" = "tiny-mlp"
"""


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


def test_run_writes_the_training_report(toys, cli, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "tiny.csv"
    args = ["run", str(path), "--out", str(out), "--max-steps", "3", "--max-eval-batches", "1"]
    result = cli.invoke(main, [*args, "--set", "dataset.options.eval=16"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert list(frame.columns) == list(TRAIN_COLUMNS)
    assert frame["run"].tolist() == [0, 1, 2]
    assert frame["model"].tolist() == ["tiny-deq", "tiny-deq", "tiny-mlp"]
    assert (frame["kind"] == "train").all() and (frame["suite"] == "tiny-cli").all()
    assert (frame["status"] == "completed").all() and (frame["seed"] == 5).all()
    assert (frame["max_steps"] == 3).all() and (frame["steps_done"] == 3).all()
    assert [json.loads(o) for o in frame["options"]] == [
        {"deq.gradient": "ift"},
        {"deq.gradient": "jfb"},
        {"model.name": "tiny-mlp"},
    ]
    deq, mlp = frame.iloc[:2], frame.iloc[2]
    # the smoke run caps the warm-up at half its steps: 1 unrolled, then 2 in equilibrium
    assert deq["unrolled_steps"].tolist() == [1, 1] and deq["equilibrium_steps"].tolist() == [2, 2]
    assert (mlp["unrolled_steps"], mlp["equilibrium_steps"]) == (0, 3)
    assert deq["gradient"].tolist() == ["ift", "jfb"] and (deq["f_max_iter"] == 12).all()
    assert (deq["f_nfe_mean"] <= 12).all() and (deq["f_nfe_mean"] >= 1).all()
    assert deq["b_nfe_mean"].notna().tolist() == [True, False]  # jfb solves no backward
    assert mlp[["solver", "gradient", "f_nfe_mean", "eval_nfe_mean"]].isna().all()
    # eval on 1 batch of 8 samples: accuracies are multiples of 12.5 %
    assert ((frame["eval_top1"] / 12.5) % 1 == 0).all()
    # ... each with its 95 % Wilson interval over those 8 images
    assert (frame["eval_count"] == 8).all()
    for _, row in frame.iterrows():
        low, high = wilson_interval(row["eval_top1"] / 100 * 8, 8)
        ci = (row["eval_top1_ci_low"], row["eval_top1_ci_high"])
        assert ci == pytest.approx((100 * low, 100 * high))
    assert (frame["params"] > 0).all() and (frame["rss_peak_mb"] > 0).all()
    assert frame["peak_mem_mb"].isna().all()  # CPU: no CUDA peak
    assert (frame["epochs_done"] == 3 / 6).all()  # 48 samples / 8 per step = 6 steps an epoch
    steps = read_report(out.with_name("tiny.steps.csv"))
    assert list(steps.columns) == list(STEP_COLUMNS) and len(steps) == 9
    assert steps[steps.run == 0]["mode"].tolist() == ["unrolled", "equilibrium", "equilibrium"]
    final = steps.groupby("run")["loss"].last().tolist()
    assert final == pytest.approx(frame["train_loss_final"].tolist())
    traces = read_report(out.with_name("tiny.traces.csv"))
    assert list(traces.columns) == list(TRACE_COLUMNS) and set(traces["run"]) == {0, 1}
    meta = json.loads(out.with_name("tiny.meta.json").read_text())
    assert meta["kind"] == "train" and meta["runs"] == 3
    # no terminal: one plain line per run, then the final table
    assert result.output.count("run ") >= 3 and "run 3/3 tiny-mlp completed" in result.output
    assert "top-1 %" in result.output and "95 % CI" in result.output
    assert "over seeds" not in result.output  # no repeats: no seeds table


def test_validate_and_bad_keys(toys, cli, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    ok = cli.invoke(main, ["validate", str(path)])
    assert ok.exit_code == 0 and "expands to 3 runs" in ok.output
    bad = cli.invoke(main, ["validate", str(path), "--set", "recipe.optimiser=adam"])
    assert bad.exit_code == 2
    assert "recipe.optimiser: unknown key; did you mean 'optimizer'" in bad.output
    assert "Traceback" not in bad.output
    limit = cli.invoke(main, ["run", str(path), "--limit", "3"])
    assert limit.exit_code == 2 and "--max-steps" in limit.output


def test_live_display_on_a_terminal(toys, tmp_path):
    import io

    from rich.console import Console

    from deqbench.execution.runner import run_suite
    from deqbench.report.display import TrainDisplay
    from deqbench.suite.load import load_suite
    from deqbench.suite.train import smoke_train

    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    suite = smoke_train(load_suite(path), max_steps=2)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140)
    with TrainDisplay(console, suite.name, len(suite.runs)) as display:
        assert display.live_mode
        outcome = run_suite(
            suite, tmp_path / "t.csv", suite_device(), display.run_finished, display
        )
        display.progress({"step": 1, "loss": 0.5, "f_nfe": 7, "f_rel_residual": 1e-4})
        assert "NFE 7" in display.run.tasks[-1].fields["info"]
        frame = Console(file=io.StringIO(), width=140)  # what the live display draws now
        frame.print(display._render())
        drawn = frame.file.getvalue()
        assert "tiny-mlp" in drawn and "step ms" in drawn  # the finished runs' table
    assert (
        [r["status"] for r in display.rows]
        == ["completed"] * 3
        == [r["status"] for r in outcome.rows]
    )
    text = buffer.getvalue()
    # the last frame keeps the suite's bar only: the summary prints the table once, next
    assert "tiny-cli" in text and "3/3" in text


def _rows(*specs):
    base = {"model": "tiny-deq", "solver": "anderson", "status": "completed", "seed": 0}
    base |= {"options": "{}", "eval_count": 360}
    rows = []
    for spec in specs:
        row = {**base, **spec}
        if "hits" in row:  # top-1 and its Wilson interval from a count of 360
            hits = row.pop("hits")
            low, high = wilson_interval(hits, 360)
            row |= {"eval_top1": 100 * hits / 360}
            row |= {"eval_top1_ci_low": 100 * low, "eval_top1_ci_high": 100 * high}
        rows.append(row)
    return rows


def _text(table) -> str:
    import io

    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=200).print(table)
    return buffer.getvalue()


def test_summary_shows_the_interval_and_marks_top1_within_noise_of_the_best():
    rows = _rows(
        {"gradient": "ift", "hits": 342},  # 95.0 %, [92.2, 96.8]
        {"gradient": "jfb", "hits": 336},  # 93.3 %, [90.3, 95.5]: overlaps the best
        {"gradient": "phantom", "hits": 306},  # 85.0 %, [80.9, 88.3]: clearly below
        {"gradient": "unrolled", "status": "error"},
    )
    text = _text(tables.train_table(rows, TRAIN_KEYS))
    assert "92.2–96.8" in text and "90.3–95.5" in text and "80.9–88.3" in text
    lines = {g: next(ln for ln in text.splitlines() if f" {g} " in ln) for g in ("ift", "jfb")}
    assert "│ 95 " in lines["ift"] and "│ 93.3 ≈ " in lines["jfb"]
    assert "85 ≈" not in text and "≈ top-1 within noise of the best run's 95 %" in text
    assert tables.seeds_table(rows, TRAIN_KEYS) is None  # one seed each


def test_summary_shows_the_median_residual_and_the_gradient_cosine():
    rows = _rows({"gradient": "ift"}, {"gradient": "jfb"})
    rows[0] |= {"f_rel_residual_median_final": 4.5e-4, "f_rel_residual_final": 0.2}
    rows[0] |= {"grad_cosine_median": 0.99981, "grad_cosine_worst": 0.9}
    rows[1] |= {"f_rel_residual_median_final": 0.0022, "grad_cosine_median": 0.96437}
    text = _text(tables.train_table(rows, TRAIN_KEYS))
    header = text.splitlines()[1]
    assert "f res" in header and "grad cos" in header
    ift = next(ln for ln in text.splitlines() if " ift " in ln)
    jfb = next(ln for ln in text.splitlines() if " jfb " in ln)
    assert "0.00045" in ift and "0.9998" in ift and "0.2" not in ift  # the median, not the worst
    assert "0.0022" in jfb and "0.9644" in jfb


def test_summary_with_repeats_shows_mean_sd_and_n_per_configuration():
    rows = _rows(
        {"gradient": "ift", "seed": 0, "eval_top1": 80.0, "step_ms_median": 10.0},
        {"gradient": "ift", "seed": 1, "eval_top1": 81.0, "step_ms_median": 12.0},
        {"gradient": "ift", "seed": 2, "eval_top1": 85.0, "step_ms_median": 14.0},
        {"gradient": "jfb", "seed": 0, "eval_top1": 70.0, "step_ms_median": 8.0},
        {"gradient": "jfb", "seed": 1, "status": "error"},
        {"gradient": "jfb", "seed": 2, "eval_top1": 74.0, "step_ms_median": 9.0},
    )
    text = _text(tables.seeds_table(rows, TRAIN_KEYS))
    assert "over seeds: mean ± SD of the completed runs" in text
    ift = next(line for line in text.splitlines() if " ift " in line)
    jfb = next(line for line in text.splitlines() if " jfb " in line)
    # 80, 81, 85: mean 82, SD √7 = 2.65; step 10, 12, 14: 12 ± 2
    assert "│ 3 " in ift and "│ 82 ± 2.6 " in ift and "│ 12 ± 2 " in ift
    # 70 and 74 (one of 3 seeds failed): 72 ± √8 = 2.83; 82 ± 2.6 and 72 ± 2.8 over 2-3
    # seeds: t intervals [75.4, 88.6] and [46.6, 97.4] overlap, so jfb is within noise
    assert "│ 2/3 " in jfb and "│ 72 ± 2.8 ≈ " in jfb and "│ 8.5 ± 0.71 " in jfb
    assert "≈ top-1 within noise of the best configuration's 82 %" in text
    # the per-run table keeps one row per run and marks nothing: the seeds table judges
    assert "≈" not in _text(tables.train_table(rows, TRAIN_KEYS))


REPEATS = """
[suite]
name = "tiny-repeats"
kind = "train"
seed = 5
device = "cpu"
repeats = 2
isolate = false

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-mlp"

[recipe]
optimizer = "sgd"
lr = 0.05
epochs = 1

[matrix]
"recipe.lr" = [0.05, 0.1]
"""


def test_run_with_repeats_prints_the_seeds_table_and_keeps_one_row_per_run(toys, cli, tmp_path):
    path = tmp_path / "repeats.toml"
    path.write_text(textwrap.dedent(REPEATS))
    out = tmp_path / "r.csv"
    args = ["run", str(path), "--out", str(out), "--max-steps", "2", "--max-eval-batches", "1"]
    result = cli.invoke(main, [*args, "--set", "dataset.options.eval=16"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert frame["seed"].tolist() == [5, 6, 5, 6] and (frame["eval_count"] == 8).all()
    assert "over seeds: mean ± SD of the completed runs" in result.output
    seeds = result.output.split("over seeds")[1]
    assert "lr=0.05" in seeds and "lr=0.1" in seeds and "│ 2 " in seeds


def suite_device():
    import torch

    return torch.device("cpu")


def test_a_diverged_training_run_is_a_failed_run(toys, cli, tmp_path):
    # Its loss turned NaN: it trained no model, so the suite exits 1 as for an error row.
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE).split("[[include]]")[0])  # tiny-deq only
    out = tmp_path / "d.csv"
    args = ["run", str(path), "--out", str(out), "--max-steps", "3", "--max-eval-batches", "1"]
    sets = ["--set", "suite.isolate=false", "--set", "model.options.nan_at_step=1"]
    result = cli.invoke(main, [*args, *sets])  # the ift and jfb runs
    assert result.exit_code == 1, result.output
    assert read_report(out)["status"].tolist() == ["diverged", "diverged"]
    assert "2 run(s) failed" in result.stderr


def test_limit_and_only_on_a_training_suite_are_refused_in_one_line(toys, cli, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(SUITE))
    result = cli.invoke(main, ["run", str(path), "--limit", "3", "--only", "p"])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert f"{path}: --limit and --only apply to solve suites" in message
    assert "a training suite takes --max-steps and --max-eval-batches" in message


def test_without_a_terminal_progress_lines_fall_on_the_chosen_steps(toys, cli, tmp_path):
    # tiny-mlp, 2 epochs of 6 steps, evaluated after the first: lines at steps 4, 8 and the
    # last (12), the interim evaluation after step 6, then the finished run; the table once
    path = tmp_path / "tiny.toml"
    text = textwrap.dedent(SUITE).split("[matrix]")[0].replace("epochs = 3", "epochs = 2")
    path.write_text(
        text.replace('name = "tiny-deq"', 'name = "tiny-mlp"') + "[eval]\nevery_epochs = 1\n"
    )
    out = tmp_path / "p.csv"
    args = ["run", str(path), "--out", str(out), "--max-eval-batches", "1", "--progress-every", "4"]
    result = cli.invoke(main, [*args, "--set", "suite.isolate=false"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("run 1/1 ")]
    assert [line.split(":")[1].split(",")[0] for line in lines[:4]] == [
        " step 4/12",
        " eval after epoch 1 (step 6)",
        " step 8/12",
        " step 12/12",
    ]
    assert lines[1].startswith("run 1/1 tiny-mlp: eval after epoch 1 (step 6): top-1 ")
    assert lines[4].startswith("run 1/1 tiny-mlp completed top1=") and len(lines) == 5
    assert " img/s, ETA " in lines[0] and "loss " in lines[0]
    assert result.output.count("top-1 %") == 1  # the summary table, printed once
    # the cadence is display only: not in the suite record that --resume and merge compare
    assert "progress_every" not in (out.with_name("p.meta.json")).read_text()
