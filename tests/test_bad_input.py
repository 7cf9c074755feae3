"""Bad input from issue 15: each is exit 2 and one line naming what was wrong, no traceback."""

from __future__ import annotations

import tracemalloc
import types

import pytest

from deqbench.cli import _plural, main
from deqbench.cli import listing as cli_listing
from deqbench.suite.load import load_suite
from deqbench.suite.solve import WARN_RUNS, smoke

SUITE = """
[suite]
name = "t"
repeats = 1
warmup = 0

[[problems]]
name = "p"
cell = "tanh"
batch_size = 2
input_shape = [8]
options = { dim = 8, spectral_norm = 0.5 }

[matrix]
solver = ["fixed-point"]
max_iter = [5]
"""


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    return path


def _one_line_error(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    for part in expected:
        assert part in message, message
    return message


def test_out_onto_an_existing_report_is_refused(cli, suite, tmp_path):
    out = tmp_path / "r.csv"
    first = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = out.read_bytes()
    result = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    _one_line_error(result, f"--out {out}", "already there")
    assert out.read_bytes() == before  # nothing appended


def test_out_under_a_file_is_a_clear_error(cli, suite, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "r.csv"
    _one_line_error(cli.invoke(main, ["run", str(suite), "--out", str(out)]), "cannot write")


def test_out_in_an_unwritable_folder_is_a_clear_error(cli, suite, tmp_path, monkeypatch):
    # root may write anywhere, so the folder's refusal is simulated where the probe writes
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("deqbench.report.results.tempfile.TemporaryFile", refuse)
    result = cli.invoke(main, ["run", str(suite), "--out", str(tmp_path / "ro" / "r.csv")])
    _one_line_error(result, "cannot write", "Permission denied")


@pytest.mark.parametrize("device", ["nonsense", "mps", "cuda:x", "cpu:0"])
def test_device_must_be_one_that_help_lists(cli, suite, tmp_path, device):
    args = ["run", str(suite), "--out", str(tmp_path / "r.csv"), "--device", device]
    _one_line_error(cli.invoke(main, args), f"device {device!r}", "cpu, cuda, cuda:N")
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("matrix.stop_mode=[]", "matrix.stop_mode: value should have at least 1 item"),
        ("matrix.solver=[anderson]", "did not parse as TOML"),
        ("matrix.solver=[anderson]", """--set 'matrix.solver=["anderson"]'"""),
    ],
)
def test_overrides_that_cannot_be_meant(cli, suite, tmp_path, override, expected):
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(suite), "--set", override, "--out", str(out)])
    _one_line_error(result, expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("matrix.max_iter=[1", "matrix.max_iter takes an array of integers ≥ 1, e.g. "),
        ("matrix.tol=[1e-4", "matrix.tol takes an array of numbers > 0"),
        ("suite.repeats=[3", "suite.repeats takes an integer ≥ 1, e.g. --set 'suite.repeats=20'"),
        (
            "suite.timeout='2h",
            """suite.timeout takes a duration, e.g. --set 'suite.timeout="2h"'""",
        ),
    ],
)
def test_an_unparsed_value_is_told_the_type_of_its_key(cli, suite, override, expected):
    message = _one_line_error(
        cli.invoke(main, ["validate", str(suite), "--set", override]), "did not parse", expected
    )
    assert "anderson" not in message  # a solver name is no example for a number


def test_misspelt_required_keys_get_did_you_mean_and_every_problem(cli, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.replace("[matrix]", "[matrx]").replace("batch_size", "batch_sise"))
    message = _one_line_error(cli.invoke(main, ["validate", str(path)]))
    assert "4 problems:" in message
    unknown = message.index("matrx: unknown key; did you mean 'matrix'?")
    typo = message.index("problems[0].batch_sise: unknown key; did you mean 'batch_size'?")
    missing = message.index("matrix: missing required key")
    assert max(unknown, typo) < missing  # the cause before its consequence
    assert "problems[0].batch_size: missing required key" in message


def test_a_byte_order_mark_is_accepted(cli, tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xef\xbb\xbf" + SUITE.encode())
    result = cli.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and "expands to 1 run" in result.output, result.output


def test_a_huge_matrix_warns_and_costs_memory_by_sweep_not_by_run(cli, tmp_path):
    path = tmp_path / "s.toml"
    text = SUITE.replace("max_iter = [5]", f"max_iter = {list(range(1, 1001))}")
    path.write_text(text + f"tol = {[1e-4 * (1 + i) for i in range(1000)]}\n")
    tracemalloc.start()
    suite = load_suite(path)
    limited = smoke(suite, 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(suite.runs) == len(limited.runs) == 10**6
    assert peak < 50e6, peak  # 10⁶ Run objects would be hundreds of MB
    last = limited.runs[-1]
    assert (last.index, last.max_iter, last.tol, last.smoke_max_iter) == (10**6 - 1, 1000, 0.1, 3)
    assert [r.max_iter for r in suite.runs[:3]] == [1, 1, 1]  # tol varies fastest
    assert [r.tol for r in suite.runs[:2]] == [1e-4, 2e-4]
    assert suite.warnings and "1,000,000 runs" in suite.warnings[0]
    result = cli.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and "warning:" in result.output
    assert f"more than {WARN_RUNS:,}" in result.output


def test_list_of_an_empty_kind_says_why(cli, monkeypatch):
    empty = types.SimpleNamespace(entries=lambda kinds=None: [], failures=[], versions={})
    monkeypatch.setattr(cli_listing, "get_registry", lambda: empty)
    result = cli.invoke(main, ["list", "models"])
    assert result.exit_code == 0
    assert "no models are registered" in result.output and "entry point" in result.output


def test_counts_are_pluralised():
    assert _plural(1, "solvers") == "1 solver"
    assert _plural(2, "solvers") == "2 solvers"
    assert _plural(1, "gradients") == "1 gradient"


def test_list_plugins_has_no_singular_plurals(cli):
    result = cli.invoke(main, ["list", "plugins"])
    assert result.exit_code == 0
    for kind in ("solvers", "gradients", "cells", "models", "heads", "datasets"):
        assert f" 1 {kind}" not in result.output and f"│ 1 {kind}" not in result.output
