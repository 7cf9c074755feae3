"""Suite validation: every kind of bad suite is one clear line naming the file and the key."""

from __future__ import annotations

import pytest

from deqbench.cli import main
from deqbench.errors import ConfigError
from deqbench.suite.load import load_suite
from deqbench.suite.solve import smoke

GOOD = """
[suite]
name = "t"
repeats = 1

[[problems]]
name = "p"
cell = "tanh"
batch_size = 4
input_shape = [8]
options = { dim = 8, spectral_norm = 0.5 }

[matrix]
solver = ["fixed-point"]
max_iter = [10, 20]
tol = 1e-4

[solver_options.fixed-point]
beta = [1.0, 0.5]
"""


def _write(tmp_path, text: str):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def test_matrix_expands_to_the_cartesian_product(tmp_path):
    suite = load_suite(_write(tmp_path, GOOD))
    assert len(suite.runs) == 4  # 2 beta × 2 max_iter
    assert {(r.solver_options["beta"], r.max_iter) for r in suite.runs} == {
        (1.0, 10), (1.0, 20), (0.5, 10), (0.5, 20),
    }  # fmt: skip
    assert [r.index for r in suite.runs] == [0, 1, 2, 3]
    assert suite.runs[0].tol == 1e-4  # a scalar is a one-element sweep


def test_overrides_are_applied_and_validated(tmp_path):
    path = _write(tmp_path, GOOD)
    suite = load_suite(path, ["matrix.max_iter=[7]", "problems.0.batch_size=2", "suite.name=x"])
    assert {r.max_iter for r in suite.runs} == {7} and suite.name == "x"
    assert suite.runs[0].problem.batch_size == 2
    with pytest.raises(ConfigError, match=r"matrix\.max_iter\[0\]: input should be greater"):
        load_suite(path, ["matrix.max_iter=[-1]"])
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        load_suite(path, ["matrix.max_iter"])


def test_smoke_caps_iterations_and_repeats(tmp_path):
    suite = smoke(load_suite(_write(tmp_path, GOOD)), 3)
    # the declared cap stays the run's identity; the smoke cap is what it solves with
    assert {(r.max_iter, r.smoke_max_iter, r.iter_cap) for r in suite.runs} == {
        (10, 3, 3), (20, 3, 3),
    }  # fmt: skip
    assert suite.spec.suite.repeats == 1
    assert {r.smoke_max_iter for r in smoke(load_suite(_write(tmp_path, GOOD)), 15).runs} == {
        None, 15,
    }  # fmt: skip


BAD = {
    "syntax": (GOOD.replace('name = "t"', 'name = "t'), "not valid TOML", None),
    "unknown-key": (
        GOOD.replace("tol = 1e-4", "tol = 1e-4\ntoll = 3"),
        "matrix.toll: unknown key; did you mean 'tol'",
        "matrix.toll",
    ),
    "wrong-type": (
        GOOD.replace("batch_size = 4", 'batch_size = "four"'),
        "problems[0].batch_size: input should be a valid integer, got 'four'",
        "problems[0].batch_size",
    ),
    "negative-max-iter": (
        GOOD.replace("max_iter = [10, 20]", "max_iter = [10, -2]"),
        "matrix.max_iter[1]: input should be greater than or equal to 1, got -2",
        "matrix.max_iter[1]",
    ),
    "zero-tol": (GOOD.replace("tol = 1e-4", "tol = 0.0"), "matrix.tol[0]", "matrix.tol[0]"),
    "bad-option-value": (
        GOOD.replace("beta = [1.0, 0.5]", "beta = [1.0, 1.5]"),
        "solver_options.fixed-point: beta must be in (0, 1], got 1.5",
        "solver_options.fixed-point",
    ),
    "unknown-option": (
        GOOD.replace("beta = [1.0, 0.5]", "betta = [1.0]"),
        "solver_options.fixed-point.betta: unknown option; did you mean 'beta'",
        "solver_options.fixed-point.betta",
    ),
    "unknown-solver": (
        GOOD.replace('solver = ["fixed-point"]', 'solver = ["fixed-pont"]'),
        "matrix.solver[0]: unknown solver 'fixed-pont'; did you mean 'fixed-point'",
        "matrix.solver[0]",
    ),
    "options-of-unknown-solver": (
        GOOD.replace("[solver_options.fixed-point]", "[solver_options.andersen]"),
        "solver_options.andersen: not in matrix.solver",
        "solver_options.andersen",
    ),
    "unknown-cell": (
        GOOD.replace('cell = "tanh"', 'cell = "tahn"'),
        "problems[0].cell: unknown cell 'tahn'; did you mean 'tanh'",
        "problems[0].cell",
    ),
    "bad-cell-option": (
        GOOD.replace("spectral_norm = 0.5", "spectral_norm = -1.0"),
        "problems[0].options: spectral_norm must be a finite number > 0",
        "problems[0].options",
    ),
    "nan-cell-option": (
        GOOD.replace("spectral_norm = 0.5", "spectral_norm = 0.5, injection_scale = nan"),
        "problems[0].options: injection_scale must be a finite number >= 0, got nan",
        "problems[0].options",
    ),
    "inf-cell-option": (
        GOOD.replace("spectral_norm = 0.5", "spectral_norm = inf"),
        "problems[0].options: spectral_norm must be a finite number > 0, got inf",
        "problems[0].options",
    ),
    "bad-spectrum": (
        GOOD.replace("spectral_norm = 0.5", 'spectral_norm = 0.5, spectrum = "orthogonl"'),
        "problems[0].options: spectrum must be one of gaussian, symmetric, orthogonal",
        "problems[0].options",
    ),
    "empty-stop-mode": (
        GOOD.replace("tol = 1e-4", "tol = 1e-4\nstop_mode = []"),
        "matrix.stop_mode: value should have at least 1 item",
        "matrix.stop_mode",
    ),
    "missing-table": (GOOD.split("[matrix]")[0], "matrix: missing required key", "matrix"),
    "bad-device": (
        GOOD.replace('name = "t"', 'name = "t"\ndevice = "gpu"'),
        "suite.device: input should be 'auto', 'cpu' or 'cuda', got 'gpu'",
        "suite.device",
    ),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_suites_fail_with_one_clear_line(tmp_path, cli, case, command):
    text, expected, key = BAD[case]
    path = _write(tmp_path, text)
    out = ["--out", str(tmp_path / "r.csv")] if command == "run" else []
    result = cli.invoke(main, [command, str(path), *out])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert str(path) in message and expected in message, message
    if key:
        assert key in message
    assert not (tmp_path / "r.csv").exists()  # nothing ran


def test_missing_file(cli, tmp_path):
    result = cli.invoke(main, ["validate", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml: no such suite file" in result.output and "Traceback" not in result.output


def test_validate_ok(cli, tmp_path):
    result = cli.invoke(main, ["validate", str(_write(tmp_path, GOOD))])
    assert result.exit_code == 0 and "expands to 4 runs" in result.output


def test_options_of_a_registered_solver_left_out_of_the_sweep_wait(tmp_path):
    text = GOOD + "\n[solver_options.anderson]\nm = [3]\n"
    suite = load_suite(_write(tmp_path, text))  # --set matrix.solver=[...] may bring it back
    assert {r.solver for r in suite.runs} == {"fixed-point"}
    both = load_suite(_write(tmp_path, text), ['matrix.solver=["fixed-point", "anderson"]'])
    assert {r.solver_options.get("m") for r in both.runs if r.solver == "anderson"} == {3}
