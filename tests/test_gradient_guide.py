"""The gradient guide's example package, installed as entry-point metadata on sys.path: its code
is the guide's code, its own tests pass, its estimator is listed, records its backward solve
(a report row's b NFE), and the guide's re-entrant hook trap raises the error the guide shows."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from guide_examples import DOCS, blocks, installed, run_own_tests

from deqbench import DEQ, ReentrantBackwardError
from deqbench.report.results import read_report
from deqbench.state import pack
from deqbench.testing import ToyCell, check_gradient

EXAMPLE = DOCS / "example-gradient"
GUIDE = DOCS / "writing-a-gradient-plugin.md"
PKG = EXAMPLE / "src" / "deqbench_example_gradient"


@pytest.fixture
def example_installed(tmp_path):
    with installed(EXAMPLE, tmp_path) as registry:
        yield registry


def test_the_package_is_the_guides_code():
    python = blocks(GUIDE, "python")
    for path in (PKG / "__init__.py", PKG / "estimator.py"):
        body = path.read_text().split("\n", 2)[2].lstrip("\n")  # minus the docstring line
        assert body in python, path.name
    assert 'example-gradient = "deqbench_example_gradient"' in blocks(GUIDE, "toml")[0]


def test_listed_and_its_own_tests_pass(example_installed):
    entry = example_installed.get("gradients", "damped-ift")
    assert entry.plugin == "example-gradient"
    assert not [f for f in example_installed.failures if f.plugin == "example-gradient"]
    run_own_tests(EXAMPLE)
    exec(compile(next(b for b in blocks(GUIDE, "python") if "check_gradient(" in b), "", "exec"))


def test_tau_interpolates_between_jfb_and_ift(example_installed):
    """tau = 0 is one VJP (jfb's gradient, one backward evaluation), tau = 1 is ift's."""
    assert check_gradient("damped-ift", options={"tau": 0.0}).b_nfe == 2  # v, then v again
    damped, exact = check_gradient("damped-ift", options={"tau": 1.0}), check_gradient("ift")
    assert damped.rel_error == pytest.approx(exact.rel_error) and damped.b_nfe == exact.b_nfe


def test_the_guides_suite_reports_b_nfe(example_installed, cli, tmp_path):
    """The guide's suite and commands as written: every row has a backward NFE, the ones of
    the guide's table."""
    from deqbench.cli import main

    suite = tmp_path / "my-gradient.toml"
    suite.write_text(next(b for b in blocks(GUIDE, "toml") if "[suite]" in b))
    out = tmp_path / "reports" / "my-gradient.csv"
    assert cli.invoke(main, ["validate", str(suite)]).exit_code == 0
    # In this process: the rows are a worker's, without a worker process's start-up.
    result = cli.invoke(
        main, ["run", str(suite), "--out", str(out), "--set", "suite.isolate=false"]
    )
    assert result.exit_code == 0, result.output
    rows = read_report(out)
    assert list(rows.gradient) == ["ift", "damped-ift", "damped-ift"]
    assert list(rows.b_nfe) == [12, 7, 11] and set(rows.b_status) == {"converged"}
    table = GUIDE.read_text().split("| gradient | grad options | b NFE |")[1]
    for nfe in (12, 7, 11):
        assert f"| {nfe} | converged |" in table


def test_the_hook_on_fz_itself_is_stopped(example_installed, monkeypatch, tmp_path):
    """The guide's section 5: the example with ``out = fz`` re-enters its hook; the core
    raises the guide's error at the second entry instead of recursing without end."""
    source = (PKG / "estimator.py").read_text()
    line = "out = fz.view_as(fz)"
    assert source.count(line) == 1
    (tmp_path / "trap_estimator.py").write_text(source.replace(line, "out = fz"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        trap = importlib.import_module("trap_estimator").DampedIFT()
        cell = ToyCell()
        x = torch.randn(3, *cell.input_shape, dtype=torch.float64)
        deq = DEQ(cell, "fixed-point", trap, f_max_iter=100, f_tol=1e-10)
        with pytest.raises(ReentrantBackwardError) as caught:
            pack(deq(x)).sum().backward()
    finally:
        sys.modules.pop("trap_estimator", None)
    shown = next(b for b in blocks(GUIDE, "text") if "ReentrantBackwardError" in b).strip()
    assert shown == f"ReentrantBackwardError: {caught.value}"
    assert deq.stats.backward is None  # the outer solve never finished
