"""Optional TensorBoard logging: the scalars each step row writes, the folder layout under the
report, and the clear error when tensorboard is not installed."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest

from deqbench.errors import ConfigError
from deqbench.report import tensorboard as logging_tb
from deqbench.report.tensorboard import TensorBoardRun, log_root, require_tensorboard, run_folder


class FakeWriter:
    """Records what a SummaryWriter would have written."""

    def __init__(self, folder: str) -> None:
        self.folder, self.scalars, self.flushed, self.closed = folder, [], 0, 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed += 1


def test_step_rows_become_scalars_in_a_run_subfolder(tmp_path):
    report = tmp_path / "reports" / "digits-1.csv"
    writers = []

    def factory(folder):
        writers.append(FakeWriter(folder))
        return writers[-1]

    with TensorBoardRun(
        report, 7, label="anderson ift/f_max_iter=18", writer_factory=factory
    ) as tb:
        tb.log_step(
            {
                "run": 7,
                "step": 0,
                "mode": "unrolled",
                "loss": 2.5,
                "lr": 1e-3,
                "f_nfe": None,
                "f_rel_residual": math.nan,
                "b_nfe": "",
                "images_per_s": 90.0,
            }
        )
        tb.log_step(
            {
                "run": 7,
                "step": 1,
                "loss": 2.0,
                "lr": 9e-4,
                "f_nfe": 12,
                "f_rel_residual": 1e-4,
                "b_nfe": 15,
                "images_per_s": 100.0,
            }
        )
        tb.log_scalars(1, {"eval/top1": 71.5})
    (writer,) = writers
    assert writer.folder == str(
        tmp_path / "reports" / "digits-1.tensorboard" / "run-007-anderson-ift-f_max_iter-18"
    )
    assert writer.scalars == [
        ("train/loss", 2.5, 0),
        ("train/images_per_s", 90.0, 0),
        ("train/lr", 1e-3, 0),
        ("train/loss", 2.0, 1),
        ("train/f_nfe", 12.0, 1),
        ("train/b_nfe", 15.0, 1),
        ("train/f_rel_residual", 1e-4, 1),
        ("train/images_per_s", 100.0, 1),
        ("train/lr", 9e-4, 1),
        ("eval/top1", 71.5, 1),
    ]
    assert writer.flushed == 1 and writer.closed == 1
    tb.close()  # twice is harmless
    assert writer.closed == 1
    with pytest.raises(RuntimeError, match="closed"):
        tb.log_step({"step": 2, "loss": 1.0})


def test_folders_sit_beside_the_report():
    assert str(log_root("reports/x.csv")) == "reports/x.tensorboard"
    assert str(run_folder("reports/x.csv", 3)) == "reports/x.tensorboard/run-003"


def test_missing_tensorboard_is_a_config_error_naming_the_key(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert not logging_tb.tensorboard_available()
    with pytest.raises(
        ConfigError, match=r"suite\.toml: \[logging\] tensorboard = true needs .*pip install"
    ):
        require_tensorboard("suite.toml: [logging] tensorboard")
    # The default writer, without tensorboard: the same kind of error, not an ImportError.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="tensorboard package is not installed"):
        TensorBoardRun(tmp_path / "r.csv", 0)


def test_available_tensorboard_passes(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    require_tensorboard()


def test_a_digits_run_writes_real_event_files(cli, tmp_path):
    """The ``tensorboard`` logger through the hook, with the real SummaryWriter: the events
    hold the report's step losses and its evaluation."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deqbench import plugins
    from deqbench.cli import main
    from deqbench.testing.loggers import smoke_report, smoke_suite
    from deqbench.testing.train_toys import TrainToys

    plugins.reset_registry(("train-toys", TrainToys()))
    try:
        suite = smoke_suite(tmp_path, ["tensorboard"])
        out = tmp_path / "r.csv"
        result = cli.invoke(main, ["run", str(suite), "--out", str(out), "--max-steps", "3"])
        assert result.exit_code == 0, result.output
    finally:
        plugins.reset_registry()
    row, steps = smoke_report(out)
    events = EventAccumulator(str(tmp_path / "r.tensorboard" / "run-000-tiny-deq"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [s["step"] for s in steps] == [0, 1, 2]
    assert [e.value for e in losses] == pytest.approx([s["loss"] for s in steps], rel=1e-6)
    (top1,) = events.Scalars("eval/top1")
    assert top1.step == 3 and top1.value == pytest.approx(row["eval_top1"], rel=1e-6)
