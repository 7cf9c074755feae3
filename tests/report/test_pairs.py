"""``compare REPORT --pair KEY=A:B`` on any run key, against hand-computed ratios."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from deqbench.cli import main
from deqbench.errors import ConfigError
from deqbench.report.compare import compare_pairs
from deqbench.report.pairs import parse_pair
from deqbench.runs.train.columns import TRAIN_COLUMNS


def _run(model, gradient, lr, step_ms, top1, **extra):
    """A completed training row whose options record the swept model, gradient and lr."""
    row = dict.fromkeys(TRAIN_COLUMNS)
    options = {"model.name": model, "deq.gradient": gradient, "recipe.lr": lr}
    row.update(
        kind="train",
        model=model,
        dataset="digits",
        image_size=32,
        batch_size=64,
        solver="anderson",
        solver_options="{}",
        gradient=gradient,
        gradient_options="{}",
        f_max_iter=18,
        f_tol=1e-3,
        model_options="{}",
        options=json.dumps(options),
        seed=0,
        precision="fp32",
        status="completed",
        eval_top1=top1,
        step_ms_median=step_ms,
    )
    return {**row, **extra}


def _report(*rows):
    return pd.DataFrame(list(rows), columns=list(TRAIN_COLUMNS))


#: Two models × two gradients × two learning rates, some missing; lr 0.1 and 0.01 collide on
#: every identity column: only the swept options tell them apart.
REPORT = _report(
    _run("mdeq-cpu-small", "ift", 0.1, 100.0, 80.0),
    _run("mdeq-cpu-small", "jfb", 0.1, 60.0, 78.0),
    _run("dwsep-deq", "ift", 0.1, 50.0, 79.0),
    _run("dwsep-deq", "jfb", 0.1, 40.0, 75.0),
    _run("mdeq-cpu-small", "ift", 0.01, 100.0, 70.0),
    _run("dwsep-deq", "ift", 0.01, 80.0, 72.0),
)


def _by(table, *keys):
    return table.set_index(list(keys))


@pytest.mark.parametrize(
    "text,parsed",
    [
        ("model=mdeq-cpu-small:dwsep-deq", ("model", "mdeq-cpu-small", "dwsep-deq")),
        ("anderson:broyden", ("solver", "anderson", "broyden")),
        ("f_tol=1e-3:1e-4", ("f_tol", "1e-3", "1e-4")),
    ],
)
def test_parse_pair(text, parsed):
    assert parse_pair(text) == parsed


@pytest.mark.parametrize("text", ["anderson", "model=:b", "=a:b", "model=a:"])
def test_parse_pair_refuses_what_is_not_key_a_b(text):
    with pytest.raises(ConfigError, match=r"expected \[KEY=\]A:B"):
        parse_pair(text)


def test_pair_on_model_matches_on_everything_else():
    out = compare_pairs(REPORT, [("mdeq-cpu-small", "dwsep-deq")], key="model")
    assert out.pair == "model" and out.names == ("model=mdeq-cpu-small", "model=dwsep-deq")
    assert set(out.table["model"]) == {"dwsep-deq / mdeq-cpu-small"}
    # the options still differ in model.name: stripped of it, they tell lr 0.1 from 0.01
    assert "options" in out.keys and any("'options'" in note for note in out.notes)
    t = out.table.assign(lr=out.table["options"].map(lambda v: json.loads(v)["recipe.lr"]))
    t = _by(t, "gradient", "lr")
    # ift 0.1: 50 / 100, 79 − 80; jfb 0.1: 40 / 60, 75 − 78; ift 0.01: 80 / 100, 72 − 70
    assert t["step_ms_median_ratio"].to_dict() == pytest.approx(
        {("ift", 0.1): 0.5, ("jfb", 0.1): 2 / 3, ("ift", 0.01): 0.8}
    )
    assert t["eval_top1_diff"].to_dict() == {("ift", 0.1): -1, ("jfb", 0.1): -3, ("ift", 0.01): 2}
    assert t["worse"].to_dict() == {("ift", 0.1): "", ("jfb", 0.1): "eval_top1", ("ift", 0.01): ""}
    assert out.only_a.empty and out.only_b.empty


def test_pair_on_gradient_leaves_unpaired_runs_one_sided():
    out = compare_pairs(REPORT, [("ift", "jfb")], key="gradient")
    t = _by(out.table, "model")
    assert set(t["gradient"]) == {"jfb / ift"} and len(t) == 2
    # mdeq: 60 / 100, 78 − 80; dwsep: 40 / 50, 75 − 79
    assert t["step_ms_median_ratio"].to_dict() == {"mdeq-cpu-small": 0.6, "dwsep-deq": 0.8}
    assert t["eval_top1_diff"].to_dict() == {"mdeq-cpu-small": -2.0, "dwsep-deq": -4.0}
    assert out.regressions == 2
    assert sorted(out.only_a["model"]) == ["dwsep-deq", "mdeq-cpu-small"]  # the lr 0.01 runs
    assert set(out.only_a["gradient"]) == {"ift"} and out.only_b.empty


def test_pair_on_a_swept_option_matches_numbers_as_numbers():
    out = compare_pairs(REPORT, [("0.1", "1e-2")], key="recipe.lr")
    t = _by(out.table, "model")
    assert set(t["recipe.lr"]) == {"0.01 / 0.1"}
    # ift only (jfb ran at 0.1 alone): mdeq 100 / 100, 70 − 80; dwsep 80 / 50, 72 − 79
    assert t["step_ms_median_ratio"].to_dict() == {"mdeq-cpu-small": 1.0, "dwsep-deq": 1.6}
    assert t["eval_top1_diff"].to_dict() == {"mdeq-cpu-small": -10.0, "dwsep-deq": -7.0}
    assert t.loc["dwsep-deq", "worse"] == "eval_top1;step_ms_median"
    assert len(out.only_a) == 2 and set(out.only_a["gradient"]) == {"jfb"}


def _solve(solver, m, nfe):
    return {
        "problem": "p",
        "cell": "tanh",
        "batch_size": 4,
        "solver": solver,
        "solver_options": json.dumps({"m": m}),
        "max_iter": 50,
        "tol": 1e-4,
        "stop_mode": "rel",
        "dtype": "float32",
        "status": "converged",
        "nfe": nfe,
    }


def test_pair_on_an_entry_of_a_json_column_and_plain_pairs_stay_solvers():
    report = pd.DataFrame(
        [_solve("anderson", 5, 20), _solve("anderson", 6, 15), _solve("b", 5, 10)]
    )
    out = compare_pairs(report, [("5", "6")], key="solver_options.m")
    assert out.table["nfe_ratio"].tolist() == [0.75]  # 15 / 20, anderson only
    assert out.table["solver_options.m"].tolist() == ["6 / 5"]
    assert out.only_a["solver"].tolist() == ["b"]
    # plain A:B: solvers, matched with their options left out (m differs: 5 and 5 here)
    solvers = compare_pairs(report[report["solver_options"] == '{"m": 5}'], [("anderson", "b")])
    assert solvers.table["solver"].tolist() == ["b / anderson"]
    assert solvers.table["nfe_ratio"].tolist() == [0.5]


def test_cli_pair_direction_shows_in_header_title_and_help(cli, tmp_path):
    path = tmp_path / "r.csv"
    tols = _report(
        _run("mdeq-cpu-small", "ift", 0.1, 100.0, 80.0),
        _run("mdeq-cpu-small", "ift", 0.1, 150.0, 80.5, f_tol=1e-4),
    )
    tols.to_csv(path, index=False)
    result = cli.invoke(
        main, ["compare", str(path), "--pair", "f_tol=1e-3:1e-4", "--format", "markdown"]
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "**f_tol=0.0001 (B) against f_tol=0.001 (A): costs as B / A" in text
    header = next(line for line in text.splitlines() if line.startswith("| f_tol"))
    assert header.startswith("| f_tol (B / A) | model | solver | gradient | status |")
    assert "| 0.0001 / 0.001 | mdeq-cpu-small |" in text and "| 1.5 ✗ |" in text
    assert "1 runs matched, 1 got worse, 0 newly failed, 0 fixed" in text
    helptext = cli.invoke(main, ["compare", "--help"]).output
    assert "--pair [KEY=]A:B" in helptext and "jfb / ift" in " ".join(helptext.split())


@pytest.mark.parametrize(
    "pair,message",
    [
        ("modle=a:b", "r.csv: --pair: 'modle' is not a run key of this report"),
        ("modle=a:b", "did you mean 'model' or"),
        ("recipe.lrr=0.1:1", "did you mean 'recipe.lr'?"),
        ("gradient=ift:jbf", "r.csv: --pair: gradient 'jbf' is not in this report; "),
        ("gradient=ift:jbf", "did you mean 'jfb'?"),
        ("broydn:anderson", "solver 'broydn' is not in this report; available: anderson"),
    ],
)
def test_unknown_pair_keys_and_values_are_one_line_exit_2(cli, tmp_path, pair, message):
    path = tmp_path / "r.csv"
    REPORT.to_csv(path, index=False)
    result = cli.invoke(main, ["compare", str(path), "--pair", pair])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_pairs_on_two_keys_at_once_are_refused(cli, tmp_path):
    path = tmp_path / "r.csv"
    REPORT.to_csv(path, index=False)
    args = ["compare", str(path), "--pair", "gradient=ift:jfb", "--pair", "anderson:broyden"]
    result = cli.invoke(main, args)
    assert (
        result.exit_code == 2
        and "--pair: one key per compare, got gradient, solver" in result.output
    )
