"""The run-kind seam: a kind registered by a plugin (`toy_kind`, one module) gets the whole
command line (run, smoke, shard, merge, resume, compare, validate) with no change elsewhere."""

from __future__ import annotations

import math
import textwrap

import pandas as pd
import pytest
from toy_kind import ToyPlugin

from deqbench import plugins
from deqbench.cli import main
from deqbench.report.results import read_report

SUITE = """
rates = [0.5, 0.9, 1.5]
tol = 1e-6

[suite]
name = "toy"
kind = "contraction"
isolate = {isolate}
"""


@pytest.fixture
def toy(tmp_path):
    plugins.reset_registry(("toy", ToyPlugin()))
    yield
    plugins.reset_registry()


def _suite(tmp_path, isolate: bool = True):
    path = tmp_path / "toy.toml"
    path.write_text(textwrap.dedent(SUITE.format(isolate=str(isolate).lower())))
    return path


def _steps(rate: float, tol: float = 1e-6) -> int:
    """|x_k − x*| = r^k x*: the first k with r^k x* ≤ tol."""
    target = 1 / (1 - rate)
    return math.ceil(math.log(tol / target) / math.log(rate))


@pytest.mark.parametrize("isolate", [True, False])
def test_a_plugin_kind_runs_through_the_one_runner(toy, cli, tmp_path, isolate):
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(_suite(tmp_path, isolate)), "--out", str(out)])
    assert result.exit_code == 1, result.output  # the diverging rate is an error row
    frame = read_report(out)
    assert frame["status"].tolist() == ["converged", "converged", "error"]
    assert frame["steps"].tolist()[:2] == [_steps(0.5), _steps(0.9)] == [21, 153]
    assert "does not contract" in frame["error"][2]
    iterates = pd.read_csv(out.with_name("r.iterates.csv"))
    assert len(iterates) == 21 + 153 and iterates["x"].iloc[20] == pytest.approx(2, abs=1e-6)
    assert "1 run(s) failed" in result.output


def test_its_smoke_option_and_the_others_refused(toy, cli, tmp_path):
    path = _suite(tmp_path)
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), "--max-steps", "5"])
    assert read_report(out)["steps"].tolist()[:2] == [5, 5]
    assert read_report(out)["status"].tolist()[:2] == ["max_iter", "max_iter"]
    refused = cli.invoke(main, ["run", str(path), "--limit", "3"])
    assert refused.exit_code == 2
    assert "--limit applies to solve suites; a contraction suite takes --max-steps" in (
        refused.output
    )
    assert result.exit_code == 1


def test_shards_merge_and_compare(toy, cli, tmp_path):
    path = _suite(tmp_path, isolate=False)
    for i in (1, 2):
        share = ["run", str(path), "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}.csv")]
        assert cli.invoke(main, share).exit_code in (0, 1)
    shares = [str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv")]
    merged = cli.invoke(main, ["merge", *shares, "--out", str(tmp_path / "m.csv")])
    assert merged.exit_code == 0, merged.output
    frame = read_report(tmp_path / "m.csv")
    assert frame["run"].tolist() == [0, 1, 2]
    assert len(pd.read_csv(tmp_path / "m.iterates.csv")) == 21 + 153
    full = tmp_path / "full.csv"
    cli.invoke(main, ["run", str(path), "--out", str(full)])
    compared = cli.invoke(main, ["compare", str(full), str(tmp_path / "m.csv"), "--format", "csv"])
    assert compared.exit_code == 0, compared.output
    table = pd.read_csv(pd.io.common.StringIO(compared.output))
    assert table["steps_ratio"].dropna().tolist() == [1.0, 1.0]


def test_resume_runs_only_what_is_missing(toy, cli, tmp_path):
    path = _suite(tmp_path, isolate=False)
    out = tmp_path / "r.csv"
    cli.invoke(main, ["run", str(path), "--out", str(out)])
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n")  # only run 0 survived
    again = cli.invoke(main, ["run", str(path), "--resume", str(out)])
    assert "resuming" in again.output and "1 finished runs kept" in again.output
    assert read_report(out)["run"].tolist() == [0, 1, 2]


def test_validate_and_bad_files(toy, cli, tmp_path):
    path = _suite(tmp_path)
    assert "expands to 3 runs" in cli.invoke(main, ["validate", str(path)]).output
    path.write_text(path.read_text().replace("rates", "ratez"))
    result = cli.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "ratez" in result.output and "Traceback" not in result.output
