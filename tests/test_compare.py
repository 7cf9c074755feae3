"""Report comparison as ratios, against hand-computed values."""

from __future__ import annotations

import pandas as pd
import pytest

from deqbench.cli import main
from deqbench.compare import compare_reports, compare_solvers
from deqbench.errors import ConfigError


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
