"""Shares of a suite (``run --shard I/N``) and merging their reports (``deqbench merge``)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.errors import ConfigError
from deqbench.execution.shard import parse_shard, take_share
from deqbench.report.merge import expand_ranges, index_ranges
from deqbench.report.results import read_report
from deqbench.suite.load import load_suite
from deqbench.suite.solve import select
from deqbench.testing.train_toys import TrainToys

SOLVE = """
[suite]
name = "tiny"
repeats = 2
warmup = 0

[[problems]]
name = "a"
cell = "tanh"
batch_size = 4
input_shape = [8]
options = { dim = 8, spectral_norm = 0.5 }

[[problems]]
name = "b"
cell = "tanh"
batch_size = 4
input_shape = [8]
options = { dim = 8, spectral_norm = 0.8 }

[matrix]
solver = ["anderson", "fixed-point"]
max_iter = [10, 20]
"""

TRAIN = """
[suite]
name = "tiny-train"
kind = "train"
repeats = 3

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[recipe]
steps = 2

[matrix]
"deq.solver" = ["anderson", "fixed-point"]
"deq.gradient" = ["ift", "jfb"]

[[include]]
"model.name" = "tiny-mlp"
"""

#: Columns that a rerun of the same run reproduces exactly on the CPU (times do not).
SAME = ["run", "suite", "problem", "solver", "max_iter", "smoke_max_iter", "status", "nfe"]
SAME += ["converged_frac", "rel_residual_max", "abs_residual_max", "repeats"]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def assert_partition(runs, count: int) -> None:
    """The ``count`` shares hold every run exactly once, each by its index."""
    everything = sorted(r.index for r in runs)
    held: list[int] = []
    for i in range(1, count + 1):
        share = [r.index for r in take_share_runs(runs, f"{i}/{count}")]
        assert all(index % count == i - 1 for index in share)
        held += share
    assert sorted(held) == everything and len(held) == len(set(held))


@dataclass(frozen=True)
class Runs:
    """The least a suite is to `take_share`: something with runs."""

    runs: tuple


def take_share_runs(runs, text: str):
    return take_share(Runs(tuple(runs)), parse_shard(text)).runs


@pytest.mark.parametrize("text", ["3/2", "0/2", "1/0", "2", "a/b", "-1/3"])
def test_bad_shard_is_a_one_line_error(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_bad_shard_on_the_command_line(cli, tmp_path):
    suite = write(tmp_path / "s.toml", SOLVE)
    result = cli.invoke(main, ["run", str(suite), "--shard", "3/2", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "between 1 and N" in result.stderr
    assert not (tmp_path / "x").exists()


def test_index_ranges_round_trip():
    assert index_ranges([5, 0, 1, 2, 7, 8]) == [[0, 3], [5, 6], [7, 9]]
    assert expand_ranges(index_ranges(range(24))) == list(range(24))
    assert index_ranges([]) == []


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 11])
def test_solve_shares_cover_every_run_once(fresh_registry, tmp_path, count):
    suite = load_suite(write(tmp_path / "s.toml", SOLVE))
    assert len(suite.runs) == 8
    assert_partition(suite.runs, count)
    only = select(suite, ["b"])  # --only keeps the indices; the shares still cover it
    assert_partition(only.runs, count)
    share = take_share(suite, parse_shard(f"1/{count}"))
    assert type(share) is type(suite) and share.spec == suite.spec


@pytest.mark.parametrize("count", [1, 4, 7, 15, 16])
def test_training_shares_cover_every_run_once(tmp_path, count):
    plugins.reset_registry(("train-toys", TrainToys()))
    try:
        suite = load_suite(write(tmp_path / "t.toml", TRAIN))  # validation only: nothing trains
    finally:
        plugins.reset_registry()
    assert len(suite.runs) == (2 * 2 + 1) * 3
    assert_partition(suite.runs, count)
    share = take_share(suite, parse_shard(f"2/{count}")) if count > 1 else suite
    assert all(r.index % count == (1 if count > 1 else 0) for r in share.runs)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The tiny solve suite run whole and as three shares (one by the default name), plus a
    share of another suite and one of a changed suite, all through the CLI."""
    from click.testing import CliRunner

    plugins.reset_registry()
    root = tmp_path_factory.mktemp("shards")
    suite = write(root / "s.toml", SOLVE)
    other = write(root / "o.toml", SOLVE.replace('name = "tiny"', 'name = "other"'))
    cli = CliRunner()
    base = ["--device", "cpu", "--limit", "2"]

    def run(*args: str) -> None:
        result = cli.invoke(main, ["run", *args, *base])
        assert result.exit_code == 0, result.output

    run(str(suite), "--out", str(root / "full.csv"))
    for i in (1, 3):
        run(str(suite), "--shard", f"{i}/3", "--out", str(root / f"s{i}.csv"))
    here, back = root / "cwd", os.getcwd()  # in a folder of its own: a share's default name
    here.mkdir()
    os.chdir(here)
    try:
        run(str(suite), "--shard", "2/3")
    finally:
        os.chdir(back)
    (default,) = Path(here, "reports").glob("tiny-*-shard-2-of-3.csv")
    for suffix in (".csv", ".traces.csv", ".meta.json"):
        shutil.copy(default.with_name(default.stem + suffix), root / f"s2{suffix}")
    run(str(other), "--shard", "2/3", "--out", str(root / "other.csv"))
    run(str(suite), "--shard", "2/3", "--set", "suite.seed=7", "--out", str(root / "seed7.csv"))
    plugins.reset_registry()
    return root


def test_share_meta_names_the_split_and_the_suite(reports):
    metas = [json.loads((reports / f"s{i}.meta.json").read_text()) for i in (1, 2, 3)]
    assert [m["shard"] for m in metas] == [{"index": i, "count": 3} for i in (1, 2, 3)]
    assert {m["suite_runs"] for m in metas} == {8} and [m["runs"] for m in metas] == [3, 3, 2]
    assert metas[0]["suite_run_ranges"] == [[0, 8]]
    assert len({m["fingerprint"] for m in metas}) == 1
    changed = json.loads((reports / "seed7.meta.json").read_text())["fingerprint"]
    assert changed != metas[0]["fingerprint"]
    assert sorted(read_report(reports / "s2.csv")["run"]) == [1, 4, 7]


def test_merged_shares_equal_the_unsharded_report(cli, reports, tmp_path):
    out = tmp_path / "all.csv"
    shares = [str(reports / f"s{i}.csv") for i in (3, 1, 2)]  # any order
    result = cli.invoke(main, ["merge", *shares, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "8 runs" in result.stdout and not result.stderr
    merged, full = read_report(out), read_report(reports / "full.csv")
    assert list(merged.columns) == list(full.columns)
    assert merged["run"].tolist() == list(range(8))
    pd.testing.assert_frame_equal(merged[SAME], full[SAME])
    traces = read_report(out.with_name("all.traces.csv"))
    whole = read_report(reports / "full.traces.csv")
    pd.testing.assert_frame_equal(traces, whole)  # residuals only: no times in a trace
    meta = json.loads(out.with_name("all.meta.json").read_text())
    assert meta["runs"] == 8 and meta["missing_runs"] == [] and "shard" not in meta
    assert [m["shard"]["index"] for m in meta["merged_from"]] == [3, 1, 2]


def test_missing_runs_are_named_and_strict_refuses(cli, reports, tmp_path):
    out = tmp_path / "part.csv"
    args = ["merge", str(reports / "s1.csv"), str(reports / "s3.csv"), "--out", str(out)]
    result = cli.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 of 8 runs" in result.stderr and "run 1, 4, 7" in result.stderr
    assert "shares not given: 2/3" in result.stderr
    assert sorted(read_report(out)["run"]) == [0, 2, 3, 5, 6]
    assert json.loads(out.with_name("part.meta.json").read_text())["missing_runs"] == [1, 4, 7]
    strict = tmp_path / "strict.csv"
    result = cli.invoke(main, [*args[:-1], str(strict), "--strict"])
    assert result.exit_code == 2 and "run 1, 4, 7" in result.stderr
    assert not strict.exists()


def _copy(reports: Path, name: str, to: Path, edit=None) -> Path:
    for suffix in (".csv", ".traces.csv", ".meta.json"):
        shutil.copy(reports / f"{name}{suffix}", to / f"{name}{suffix}")
    if edit:
        meta_path = to / f"{name}.meta.json"
        meta_path.write_text(json.dumps(edit(json.loads(meta_path.read_text()))))
    return to / f"{name}.csv"


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("other", "is a share of suite 'other'"),
        ("seed7", "ran suite 'tiny' differently (fingerprint"),
        ("version", "was written by deqbench 9.9"),
        ("split", "split the suite differently"),
        ("twice", "the same share given twice"),
        ("duplicate", "run 0 is twice in it"),
        ("unsharded", "not a share of a suite"),
    ],
)
def test_shares_that_do_not_belong_together_are_refused(cli, reports, tmp_path, second, message):
    first = str(reports / "s1.csv")
    if second in ("other", "seed7"):
        path = reports / f"{second}.csv"
    elif second == "version":
        path = _copy(reports, "s2", tmp_path, lambda m: {**m, "deqbench": "9.9"})
    elif second == "split":
        path = _copy(reports, "s2", tmp_path, lambda m: {**m, "shard": {"index": 2, "count": 4}})
    elif second == "twice":
        path = _copy(reports, "s1", tmp_path)
    elif second == "duplicate":
        first = str(_copy(reports, "s1", tmp_path))
        rows = Path(first).read_text().splitlines()
        Path(first).write_text("\n".join([*rows, rows[1]]) + "\n")
        path = reports / "s2.csv"
    else:
        path = reports / "full.csv"
    out = tmp_path / "m.csv"
    result = cli.invoke(main, ["merge", first, str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not out.exists()


def test_a_share_without_runs_still_leaves_a_report(cli, fresh_registry, tmp_path):
    suite = write(tmp_path / "s.toml", SOLVE)
    out = tmp_path / "s9.csv"
    result = cli.invoke(main, ["run", str(suite), "--shard", "9/9", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "holds none of the suite's runs" in result.stderr
    meta = json.loads(out.with_name("s9.meta.json").read_text())
    assert read_report(out).empty and meta["shard"] == {"index": 9, "count": 9}
    merged = tmp_path / "m.csv"
    result = cli.invoke(main, ["merge", str(out), "--out", str(merged)])
    assert result.exit_code == 0 and "8 of 8 runs" in result.stderr
    assert read_report(merged).empty
