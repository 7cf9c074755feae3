"""Ctrl-C at any moment of a suite: exit 130, and every run that finished has its row.

The interrupt is a real SIGINT to this process, sent from inside the runner's bookkeeping (while
a row is being written, while the next row is set up), where issue 15 saw rows lost.
"""

from __future__ import annotations

import os
import signal

import pytest

from deqbench.cli import main
from deqbench.execution import runner
from deqbench.execution.device import resolve_device
from deqbench.report import results
from deqbench.report.results import read_report
from deqbench.runs.solve.kind import SOLVE

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
max_iter = [5, 6, 7]
"""


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    return path


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_a_row_is_written_keeps_it(cli, suite, tmp_path, monkeypatch):
    append = results.ReportWriter.append

    def append_then_interrupt(self, row, *args, **kwargs):
        if row["run"] == 1:
            _sigint()  # lands in the middle of the write
        append(self, row, *args, **kwargs)

    monkeypatch.setattr(results.ReportWriter, "append", append_then_interrupt)
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    assert result.exit_code == 130, result.output
    frame = read_report(out)
    assert frame["run"].tolist() == [0, 1]  # both finished runs, and no third
    assert frame["status"].isin(["converged", "max_iter"]).all()
    assert frame["max_iter"].tolist() == [5, 6]
    assert "Aborted" not in result.output


def test_ctrl_c_while_the_next_run_is_set_up(cli, suite, tmp_path, monkeypatch):
    base_row = SOLVE.identity

    def set_up_then_interrupt(suite, run, device):
        if run.index == 1:
            _sigint()
        return base_row(suite, run, device)

    monkeypatch.setattr(SOLVE, "identity", set_up_then_interrupt)
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    assert result.exit_code == 130, result.output
    frame = read_report(out)
    assert frame["status"].tolist()[0] in ("converged", "max_iter")  # the finished run
    assert frame["status"].tolist()[1:] == ["interrupted"]  # the one that never started


def test_ctrl_c_after_the_last_row_still_exits_130(cli, suite, tmp_path, monkeypatch):
    append = results.ReportWriter.append

    def append_then_interrupt(self, row, *args, **kwargs):
        append(self, row, *args, **kwargs)
        if row["run"] == 2:
            _sigint()

    monkeypatch.setattr(results.ReportWriter, "append", append_then_interrupt)
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert read_report(out)["run"].tolist() == [0, 1, 2]


def test_the_handler_is_restored(suite, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    from deqbench.suite.load import load_suite

    runner.run_suite(load_suite(suite), tmp_path / "r.csv", resolve_device("cpu"))
    assert signal.getsignal(signal.SIGINT) is before
