"""Report comparison as ratios, against hand-computed values."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from deqbench.cli import main
from deqbench.errors import ConfigError
from deqbench.report.compare import compare, compare_pairs, compare_reports, compare_solvers
from deqbench.report.noise import percent_interval
from deqbench.runs.train.columns import TRAIN_COLUMNS


def _row(solver, problem="p", nfe=10, ms=2.0, **extra):
    return {
        "problem": problem,
        "cell": "tanh",
        "batch_size": 4,
        "solver": solver,
        "solver_options": "{}",
        "max_iter": 50,
        "tol": 1e-4,
        "stop_mode": "rel",
        "dtype": "float32",
        "status": "converged",
        "nfe": nfe,
        "solve_ms_median": ms,
        **extra,
    }


def test_two_reports_ratio_b_over_a():
    a = pd.DataFrame([_row("anderson", nfe=10, ms=4.0), _row("fixed-point", nfe=30, ms=3.0)])
    b = pd.DataFrame([_row("anderson", nfe=12, ms=2.0), _row("broyden", nfe=8, ms=1.0)])
    out = compare_reports(a, b)
    assert out["solver"].tolist() == ["anderson"]  # only the run both have
    assert out["nfe_ratio"].tolist() == [1.2] and out["solve_ms_median_ratio"].tolist() == [0.5]


def test_solver_pairs_within_one_report():
    report = pd.DataFrame(
        [
            _row("torchdeq-anderson", "p", nfe=20, ms=10.0),
            _row("anderson", "p", nfe=10, ms=6.0),
            _row("torchdeq-anderson", "q", nfe=40, ms=8.0),
            _row("anderson", "q", nfe=40, ms=2.0),
        ]
    )
    out = compare_solvers(report, [("torchdeq-anderson", "anderson")])
    assert out.set_index("problem")["solve_ms_median_ratio"].to_dict() == {"p": 0.6, "q": 0.25}
    assert out.set_index("problem")["nfe_ratio"].to_dict() == {"p": 0.5, "q": 1.0}
    with pytest.raises(ConfigError, match="'broyden' is not in this report"):
        compare_solvers(report, [("anderson", "broyden")])


def test_compare_cli(cli, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame([_row("anderson", nfe=10)]).to_csv(a, index=False)
    pd.DataFrame([_row("anderson", nfe=5)]).to_csv(b, index=False)
    result = cli.invoke(main, ["compare", str(a), str(b), "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "c.csv")["nfe_ratio"].tolist() == [0.5]
    bad = cli.invoke(main, ["compare", str(a)])
    assert bad.exit_code == 2 and "one report with --pair" in bad.output


# ----------------------------------------------------------------------------- solve reports


def _smoke_report(nfe_by_run, smoke_max_iter=None):
    """A `--limit 2` solve report of 3 solvers × max_iter 40/100: in old reports the smoke run
    rewrote max_iter, so the 40- and 100-iteration rows have equal identity columns."""
    rows = []
    for run, nfe in enumerate(nfe_by_run):
        solver = ["fixed-point", "anderson", "broyden"][run // 2]
        declared = [40, 100][run % 2]
        extra = {"smoke_max_iter": 2} if smoke_max_iter else {}
        row = _row(solver, nfe=nfe, ms=1.0 + run, run=run, **extra)
        row["max_iter"] = declared if smoke_max_iter else 2
        rows.append(row)
    return pd.DataFrame(rows)


def test_colliding_solve_keys_match_one_to_one_on_the_run_index():
    a = _smoke_report([1, 2, 3, 4, 5, 6])
    b = _smoke_report([2, 2, 6, 4, 5, 12])
    out = compare(a, b)
    assert len(out.table) == 6  # not 12: rows are not cross-joined
    assert "run" in out.keys and any("'run'" in note for note in out.notes)
    assert out.table.set_index("run")["nfe_ratio"].to_dict() == {
        "0": 2.0,
        "1": 1.0,
        "2": 2.0,
        "3": 1.0,
        "4": 1.0,
        "5": 2.0,
    }
    assert out.table.set_index("run")["solve_ms_median_ratio"].tolist() == [1.0] * 6


def test_declared_max_iter_with_a_cap_column_needs_no_run_index():
    a = _smoke_report([1, 2, 3, 4, 5, 6], smoke_max_iter=True)
    b = _smoke_report([2, 2, 6, 4, 5, 12], smoke_max_iter=True)
    b["run"] = b["run"] + 10  # another suite order: the identity columns alone must match
    out = compare(a, b)
    assert "run" not in out.keys and "smoke_max_iter" in out.keys and not out.notes
    got = out.table.set_index(["solver", "max_iter"])["nfe_ratio"].to_dict()
    assert got[("anderson", "40")] == 2.0 and got[("broyden", "100")] == 2.0
    assert got[("fixed-point", "100")] == 1.0 and len(got) == 6


def test_rows_that_stay_ambiguous_are_refused(cli, tmp_path):
    twice = pd.concat([_smoke_report([1, 2]), _smoke_report([1, 2])])  # appended twice: 0 1 0 1
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    twice.to_csv(a, index=False)
    _smoke_report([1, 2]).to_csv(b, index=False)
    result = cli.invoke(main, ["compare", str(a), str(b)])
    assert result.exit_code == 2, result.output
    assert "a.csv: 2 rows share the identity" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text",
    ["name,value\nx,1\ny,2\n", "", "just one line of prose, with a comma\n", "\x00\xff\xfe"],
)
def test_not_a_report_is_one_line_exit_2(cli, tmp_path, text):
    other = tmp_path / "other.csv"
    other.write_bytes(text.encode("latin-1"))
    good = tmp_path / "good.csv"
    pd.DataFrame([_row("anderson")]).to_csv(good, index=False)
    for args in ([str(other), str(good)], [str(good), str(other)], [str(other), "--pair", "a:b"]):
        result = cli.invoke(main, ["compare", *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "other.csv" in lines[0] and "not a deqbench report" in lines[0]


def test_solve_and_training_reports_do_not_mix():
    with pytest.raises(ConfigError, match="one is a solve report, the other a training one"):
        compare(pd.DataFrame([_row("anderson")]), _train(TRAIN_A[:1]))


# ----------------------------------------------------------------------------- training reports


def _train(specs):
    """Training report rows (all `TRAIN_COLUMNS`) from short specs."""
    rows = []
    for i, spec in enumerate(specs):
        row = dict.fromkeys(TRAIN_COLUMNS)
        explicit = spec.get("model") == "resnet18"
        row.update(
            run=i,
            suite="digits",
            kind="train",
            model="mdeq-cpu-small",
            head="",
            dataset="digits",
            image_size=32,
            batch_size=64,
            solver="anderson",
            solver_options="{}",
            gradient="ift",
            gradient_options="{}",
            f_max_iter=18,
            f_tol=1e-3,
            b_max_iter=20,
            model_options="{}",
            options="{}",
            seed=0,
            precision="fp32",
            max_steps=None,
            status="completed",
            error="",
            device="cpu",
        )
        if explicit:
            row.update(
                dict.fromkeys(
                    [
                        "solver",
                        "solver_options",
                        "gradient",
                        "gradient_options",
                        "f_max_iter",
                        "f_tol",
                        "b_max_iter",
                    ]
                )
            )
        row.update(spec)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))


def _done(top1, step_ms, saved, nfe, **extra):
    return {
        "eval_top1": top1,
        "step_ms_median": step_ms,
        "images_per_s": 64_000 / step_ms,
        "saved_mb": saved,
        "f_nfe_mean": nfe,
        **extra,
    }


TRAIN_A = [
    {"gradient": "ift", **_done(80.0, 100.0, 10.0, 12.0, b_nfe_mean=15.0)},
    {"gradient": "jfb", **_done(78.0, 80.0, 5.0, 12.0)},
    {"solver": "broyden", "status": "error", "error": "boom"},
    {"model": "resnet18", **_done(85.0, 50.0, 40.0, None)},
    {"solver": "fixed-point", **_done(70.0, 90.0, 10.0, 30.0)},  # only in A
]
TRAIN_B = [
    {"gradient": "jfb", **_done(78.5, 84.0, 5.0, 12.0)},  # order differs from A
    {"gradient": "ift", **_done(78.5, 120.0, 10.0, 13.2, b_nfe_mean=15.0)},
    {"solver": "broyden", **_done(79.0, 100.0, 10.0, 11.0)},  # fixed
    {"model": "resnet18", "status": "diverged", "error": "NaN loss at step 3"},  # newly failed
    {"gradient": "phantom", **_done(77.0, 70.0, 6.0, 12.0)},  # only in B
]


def test_training_reports_ratios_points_marks_and_one_sided_runs():
    out = compare(_train(TRAIN_A), _train(TRAIN_B), names=("a.csv", "b.csv"))
    assert out.kind == "train" and "run" not in out.keys and not out.notes
    t = out.table.set_index(["model", "solver", "gradient"])
    ift, jfb = (
        t.loc[("mdeq-cpu-small", "anderson", "ift")],
        t.loc[("mdeq-cpu-small", "anderson", "jfb")],
    )
    assert ift["step_ms_median_ratio"] == pytest.approx(1.2)
    assert ift["images_per_s_ratio"] == pytest.approx(1 / 1.2)
    assert ift["f_nfe_mean_ratio"] == pytest.approx(1.1) and ift["b_nfe_mean_ratio"] == 1.0
    assert ift["saved_mb_ratio"] == 1.0 and ift["eval_top1_diff"] == pytest.approx(-1.5)
    # worse: 1.2 > 1.1 (time), throughput 0.83 < 1/1.1, a 1.5-point drop > 1 point; NFE 1.1 is
    # not beyond the factor.
    assert ift["worse"].split(";") == ["eval_top1", "step_ms_median", "images_per_s"]
    assert jfb["step_ms_median_ratio"] == pytest.approx(1.05) and jfb["worse"] == ""
    assert jfb["eval_top1_diff"] == pytest.approx(0.5)
    broyden = t.loc[("mdeq-cpu-small", "broyden", "ift")]
    assert broyden["change"] == "fixed" and broyden["worse"] == ""
    assert math.isnan(broyden["eval_top1_diff"])  # nothing to compare against
    resnet = out.table[out.table["model"] == "resnet18"].iloc[0]
    assert resnet["solver"] == "" and resnet["change"] == "newly failed"
    assert resnet["worse"] == "newly failed"
    assert out.regressions == 2
    assert out.only_a[["solver", "gradient"]].values.tolist() == [["fixed-point", "ift"]]
    assert out.only_b[["solver", "gradient"]].values.tolist() == [["anderson", "phantom"]]
    # Looser thresholds: only the failure is left.
    loose = compare(_train(TRAIN_A), _train(TRAIN_B), factor=1.25, drop=2.0)
    assert loose.regressions == 1


def test_training_repeats_are_told_apart_by_seed_and_swept_options_by_options():
    a = _train([{"seed": 0, "eval_top1": 50.0}, {"seed": 1, "eval_top1": 60.0}])
    b = _train([{"seed": 1, "eval_top1": 61.0}, {"seed": 0, "eval_top1": 52.0}])
    each = compare(a, b, each_seed=True).table.set_index("seed")["eval_top1_diff"].to_dict()
    assert each == {"0": 2.0, "1": 1.0}
    lr = [{"options": '{"recipe.lr": 0.01}'}, {"options": '{"recipe.lr": 0.001}'}]
    a = _train([{**lr[0], "eval_top1": 50.0}, {**lr[1], "eval_top1": 60.0}])
    b = _train([{**lr[1], "eval_top1": 58.0}, {**lr[0], "eval_top1": 50.0}])
    out = compare(a, b)
    assert "options" in out.keys and "run" not in out.keys
    assert out.table.set_index("options")["eval_top1_diff"].to_dict() == {
        '{"recipe.lr": 0.01}': 0.0,
        '{"recipe.lr": 0.001}': -2.0,
    }


def _acc(top1, n=360):
    """Top-1 in percent over ``n`` images, with its Wilson interval and the count."""
    low, high = percent_interval(top1, n)
    return {"eval_top1": top1, "eval_top1_ci_low": low, "eval_top1_ci_high": high, "eval_count": n}


def test_a_top1_difference_within_the_wilson_intervals_is_noise_not_a_regression(cli, tmp_path):
    a = _train([{"gradient": "ift", **_acc(95.0)}, {"gradient": "jfb", **_acc(95.0)}])
    close = {"gradient": "ift", **_acc(100 * 336 / 360)}  # 93.33 % of 360
    b = _train([close, {"gradient": "jfb", **_acc(85.0)}])
    out = compare(a, b, names=("a.csv", "b.csv"))
    t = out.table.set_index("gradient")
    # ift: 95.00 → 93.33 is 1.67 points, beyond --drop 1, but the 95 % Wilson intervals of
    # 342 and 336 of 360, [92.24, 96.81] and [90.27, 95.48], overlap: noise
    assert t.loc["ift", "eval_top1_diff"] == pytest.approx(-5 / 3)
    assert (t.loc["ift", "noise"], t.loc["ift", "worse"]) == ("eval_top1", "")
    # jfb: 85 % of 360 is [80.94, 88.32], clear of [92.24, 96.81]: a regression
    assert (t.loc["jfb", "noise"], t.loc["jfb", "worse"]) == ("", "eval_top1")
    assert out.regressions == 1 and out.within_noise == 1
    pa, pb = _write(tmp_path, "a.csv", a), _write(tmp_path, "b.csv", b)
    md = cli.invoke(main, ["compare", pa, pb, "--format", "markdown", "--fail-on-regression"])
    assert md.exit_code == 1 and "1 run(s) got worse" in md.stderr
    assert "| -1.67 ≈ |" in md.stdout and "| -10.00 ✗ |" in md.stdout
    assert "≈: within noise, never counted as worse" in md.stdout
    assert "2 runs matched, 1 got worse, 1 within noise, 0 newly failed" in md.stdout
    # The noise alone fails nothing.
    pn = _write(tmp_path, "n.csv", _train([close]))
    noise = cli.invoke(main, ["compare", pa, pn, "--fail-on-regression"])
    assert noise.exit_code == 0, noise.output
    assert (
        "-1.67 ≈" in noise.stdout and "1 runs matched, 0 got worse, 1 within noise" in noise.stdout
    )
    # Reports without intervals (before eval_count) keep the plain --drop rule.
    bare = compare(a.drop(columns=["eval_top1_ci_low"]), _train([close]))
    assert bare.table["worse"].item() == "eval_top1" and bare.within_noise == 0


def _seeds(gradient, *top1):
    # 100 000 images: Wilson intervals of ±0.25 points, so only the seeds' spread is noise here
    return [{"gradient": gradient, "seed": s, **_acc(v, 100_000)} for s, v in enumerate(top1)]


def test_repeats_on_both_sides_compare_configurations_by_their_seed_means(cli, tmp_path):
    a = _train(_seeds("ift", 80.0, 81.0, 82.0) + _seeds("jfb", 80.0, 81.0, 82.0))
    b = _train(_seeds("ift", 78.0, 79.0, 80.0) + _seeds("jfb", 70.0, 71.0, 72.0))
    out = compare(a, b, names=("a.csv", "b.csv"))
    assert out.seeds and "seed" not in out.keys and len(out.table) == 2
    t = out.table.set_index("gradient")
    assert t["n_a"].tolist() == [3, 3] and t["eval_top1_sd_a"].tolist() == [1.0, 1.0]
    # ift: means 81 and 79, SD 1 over 3 seeds: t intervals 81 ± 4.303 / √3 = [78.52, 83.48]
    # and [76.52, 81.48] overlap: the 2-point drop is within the seeds' spread
    assert t.loc["ift", "eval_top1_diff"] == -2.0
    assert (t.loc["ift", "noise"], t.loc["ift", "worse"]) == ("eval_top1", "")
    # jfb: 71, [68.52, 73.48], is clear of [78.52, 83.48]
    assert (t.loc["jfb", "noise"], t.loc["jfb", "worse"]) == ("", "eval_top1")
    text = cli.invoke(main, ["compare", _write(tmp_path, "a.csv", a), _write(tmp_path, "b.csv", b)])
    assert "seeds n" in text.stdout and "-2.00 ≈" in text.stdout
    assert "2 configurations matched (seed means), 1 got worse, 1 within noise" in text.stdout
    # Seed by seed, each 2-point drop is beyond both Wilson intervals: all six got worse.
    each = compare(a, b, each_seed=True)
    assert len(each.table) == 6 and each.regressions == 6 and each.within_noise == 0
    # Repeats on one side only: matched seed by seed, and said so.
    one = compare(a, _train(_seeds("ift", 79.0)), names=("a.csv", "b.csv"))
    assert not one.seeds and len(one.table) == 1
    assert "only a.csv repeats runs with several seeds: matched seed by seed" in one.notes
    # Solver pairs within one report with repeats compare seed means too.
    report = _train(_seeds("ift", 80.0, 81.0, 82.0))
    broyden = [{**r, "solver": "broyden"} for r in _seeds("ift", 78.0, 79.0, 80.0)]
    report = pd.concat([report, _train(broyden)], ignore_index=True)
    pairs = compare_pairs(report, [("anderson", "broyden")])
    assert pairs.seeds and pairs.table["eval_top1_diff"].item() == -2.0
    assert pairs.table["noise"].item() == "eval_top1"


def _write(tmp_path, name, frame, **meta):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    base = {
        "python": "3.11.9",
        "torch": "2.5.0",
        "deqbench": "0.1.0",
        "platform": "Linux-x",
        "device": "cpu",
        "device_name": "x86_64",
        "cpu_count": 2,
        "git_commit": name,
        "plugins": {"deqbench-mdeq": "0.1.0"},
    }
    (tmp_path / (path.stem + ".meta.json")).write_text(json.dumps({**base, **meta}))
    return str(path)


@pytest.mark.parametrize("fmt", ["rich", "markdown", "csv"])
def test_compare_cli_training_every_format(cli, tmp_path, fmt):
    a = _write(tmp_path, "a.csv", _train(TRAIN_A))
    b = _write(tmp_path, "b.csv", _train(TRAIN_B))
    args = ["compare", a, b, "--format", fmt]
    ok = cli.invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "warning" not in ok.output  # same machine, device and versions; commits may differ
    failing = cli.invoke(main, [*args, "--fail-on-regression"])
    assert failing.exit_code == 1 and "2 run(s) got worse" in failing.stderr
    loose = ["--fail-on-regression", "--factor", "1.25", "--drop", "2"]
    assert cli.invoke(main, [*args, *loose]).exit_code == 1  # the newly failed run stays
    if fmt == "csv":
        frame = pd.read_csv(io.StringIO(ok.stdout), keep_default_na=False, na_values=[""])
        assert frame["side"].tolist() == ["both"] * 4 + ["only a", "only b"]
        ift = frame[
            (frame.side == "both") & (frame.gradient == "ift") & (frame.solver == "anderson")
        ]
        assert ift["step_ms_median_ratio"].item() == pytest.approx(1.2)
        assert ift["eval_top1_diff"].item() == pytest.approx(-1.5)
        assert ift["worse"].item() == "eval_top1;step_ms_median;images_per_s"
        assert frame[frame.model == "resnet18"]["change"].item() == "newly failed"
        assert frame[frame.side == "only b"][["gradient", "status_b"]].values.tolist() == [
            ["phantom", "completed"]
        ]
        return
    text = ok.stdout
    assert "only in " + a in text and "only in " + b in text
    assert "1.2 ✗" in text and "-1.50 ✗" in text and "0.833 ✗" in text  # marked worse
    assert "+0.50" in text and "1.05" in text and "1.05 ✗" not in text
    assert "completed → diverged (newly failed)" in text and "error → completed (fixed)" in text
    assert "4 runs matched, 2 got worse, 1 newly failed, 1 fixed, 1 only in" in text
    if fmt == "markdown":
        lines = text.splitlines()
        header = next(line for line in lines if line.startswith("| model"))
        assert header.startswith("| model | solver | gradient | status | top-1 Δpt | step ms b/a")
        assert lines[lines.index(header) + 1].startswith("| --- |")


def test_compare_warns_on_different_machines_devices_and_versions(cli, tmp_path):
    a = _write(tmp_path, "a.csv", _train(TRAIN_A))
    b = _write(
        tmp_path,
        "b.csv",
        _train(TRAIN_B),
        device="cuda:0",
        device_name="NVIDIA H100",
        torch="2.6.0",
        plugins={"deqbench-mdeq": "0.2.0"},
    )
    result = cli.invoke(main, ["compare", a, b])
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    assert "different machine: device_name 'x86_64' vs 'NVIDIA H100'" in warnings[0]
    assert "different device: device 'cpu' vs 'cuda:0'" in warnings[1]
    assert (
        "torch '2.5.0' vs '2.6.0'" in warnings[2]
        and "plugin deqbench-mdeq 0.1.0 vs 0.2.0" in warnings[2]
    )
    (tmp_path / "b.meta.json").unlink()
    result = cli.invoke(main, ["compare", a, b])
    assert result.exit_code == 0 and "no b.meta.json beside" in result.stderr


def test_training_solver_pairs_in_one_report(cli, tmp_path):
    report = _train(
        [
            {"solver": "anderson", **_done(80.0, 100.0, 10.0, 12.0)},
            {"solver": "broyden", **_done(79.0, 150.0, 10.0, 9.0)},
            {"solver": "anderson", "gradient": "jfb", **_done(78.0, 80.0, 5.0, 12.0)},
        ]
    )
    out = compare_pairs(report, [("anderson", "broyden")])
    assert len(out.table) == 1 and out.table["solver"].item() == "broyden / anderson"
    assert out.table["f_nfe_mean_ratio"].item() == 0.75
    assert (
        out.table["eval_top1_diff"].item() == -1.0
        and out.table["worse"].item() == "step_ms_median;images_per_s"
    )
    assert out.only_a["gradient"].tolist() == ["jfb"]
    path = _write(tmp_path, "r.csv", report)
    result = cli.invoke(
        main, ["compare", path, "--pair", "anderson:broyden", "--fail-on-regression"]
    )
    assert result.exit_code == 1, result.output


def test_no_runs_in_common_is_an_error(cli, tmp_path):
    a = _write(tmp_path, "a.csv", _train(TRAIN_A[:1]))
    b = _write(tmp_path, "b.csv", _train(TRAIN_B[4:]))
    result = cli.invoke(main, ["compare", a, b])
    assert result.exit_code == 2 and "have no runs in common (1 runs only in" in result.output


# ----------------------------------------------------------------------------- honest marks


def test_a_figure_flagged_noisy_is_never_a_regression(cli, tmp_path):
    # The same solve twice: p's time moved 2 → 3 ms, but B's run flagged it noisy (IQR over
    # 10 % of its median); q's NFE doubled, a real regression.
    a = pd.DataFrame([_row("anderson", "p", ms=2.0, noisy=""), _row("anderson", "q", nfe=10)])
    b = pd.DataFrame(
        [_row("anderson", "p", ms=3.0, noisy="solve_ms_median"), _row("anderson", "q", nfe=20)]
    )
    out = compare(a, b)
    t = out.table.set_index("problem")
    assert t.loc["p", "solve_ms_median_ratio"] == 1.5 and t.loc["p", "worse"] == ""
    assert t.loc["p", "noisy"] == "solve_ms_median" and t.loc["q", "worse"] == "nfe"
    assert out.regressions == 1 and out.noisy == 1
    pa, pb = _write(tmp_path, "a.csv", a), _write(tmp_path, "b.csv", b)
    md = cli.invoke(main, ["compare", pa, pb, "--format", "markdown", "--fail-on-regression"])
    assert md.exit_code == 1 and "1 run(s) got worse" in md.stderr  # q alone
    assert "| 1.5 ! |" in md.stdout and "| 2 ✗ |" in md.stdout
    assert "1 noisy figure(s) excluded" in md.stdout
    assert "2 runs matched, 1 got worse, 1 noisy figure(s) not judged" in md.stdout
    # The noise alone fails nothing, and says so.
    pn = _write(tmp_path, "n.csv", b.iloc[:1])
    alone = cli.invoke(main, ["compare", pa, pn, "--fail-on-regression"])
    assert alone.exit_code == 0, alone.output
    assert "--fail-on-regression ignores 1 noisy figure(s)" in alone.stderr
    assert "1.5 !" in alone.stdout and "never counted as worse" in alone.stdout


def test_training_step_time_noisy_by_its_iqr_even_in_seed_means():
    # Training rows carry no noisy column: a step-time IQR of 30 on a median of 100 flags it.
    a = _train([{"gradient": "ift", "step_ms_median": 100.0, "step_ms_iqr": 30.0}])
    b = _train([{"gradient": "ift", "step_ms_median": 130.0, "step_ms_iqr": 5.0}])
    out = compare(a, b)
    assert out.table["step_ms_median_ratio"].item() == 1.3
    assert (out.table["worse"].item(), out.table["noisy"].item()) == ("", "step_ms_median")
    quiet = compare(a.assign(step_ms_iqr=5.0), b)
    assert quiet.table["worse"].item() == "step_ms_median" and quiet.noisy == 0
    # Seed means: one noisy seed makes the configuration's mean noisy.
    seeds = [
        {"seed": s, "step_ms_median": 100.0, "step_ms_iqr": iqr} for s, iqr in ((0, 5), (1, 30))
    ]
    slow = [{"seed": s, "step_ms_median": 130.0, "step_ms_iqr": 5.0} for s in (0, 1)]
    means = compare(_train(seeds), _train(slow))
    assert means.seeds and means.table["noisy"].item() == "step_ms_median"
    assert means.regressions == 0


def test_converged_to_max_iter_is_newly_failed(cli, tmp_path):
    statuses = {"p": ("converged", "max_iter"), "q": ("max_iter", "converged")}
    statuses |= {"r": ("max_iter", "error"), "s": ("error", "max_iter")}
    a = pd.DataFrame([_row("anderson", p, status=sa) for p, (sa, _) in statuses.items()])
    b = pd.DataFrame([_row("anderson", p, status=sb) for p, (_, sb) in statuses.items()])
    out = compare(a, b)
    t = out.table.set_index("problem")
    assert t["change"].to_dict() == {
        "p": "newly failed",
        "q": "fixed",
        "r": "newly failed",
        "s": "",
    }
    assert t["worse"].to_dict() == {"p": "newly failed", "q": "", "r": "newly failed", "s": ""}
    text = cli.invoke(
        main, ["compare", _write(tmp_path, "a.csv", a), _write(tmp_path, "b.csv", b)]
    ).stdout
    assert "converged → max_iter (newly failed)" in text and "max_iter → converged (fixed)" in text
    assert "4 runs matched, 2 got worse, 2 newly failed, 1 fixed" in text
