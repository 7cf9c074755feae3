"""``deqbench run --resume`` end to end: a SIGKILLed suite resumed from its checkpoints ends with
the figures of an uninterrupted one; a Ctrl-C'd, a changed and a solve suite; checkpoint files.

The SIGKILL test runs ``deqbench`` in a subprocess of its own session (its isolated workers
too), kills the whole group once run 1 has checkpointed, and resumes it in another subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from deqbench import plugins
from deqbench.cli import main
from deqbench.execution.checkpoint import checkpoint_dir, checkpoint_path
from deqbench.report.results import read_report
from deqbench.runs.solve.kind import SOLVE as SOLVE_KIND
from deqbench.testing import train_toys
from deqbench.testing.train_toys import TrainToys

TRAIN = """
[suite]
name = "tiny"
kind = "train"
seed = 3
device = "cpu"
threads = 1
checkpoint_every = 2

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"
options = { input_noise = 0.3 }  # the RNG state must be restored for the figures to agree

[deq]
f_max_iter = 12

[recipe]
optimizer = "adam"
lr = 0.01
epochs = 3
unrolled_warmup_steps = 2

[matrix]
"deq.gradient" = ["ift", "jfb"]
"""

SOLVE = """
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

#: In-process runs: no worker process per run (seconds each on this machine), and a kept
#: checkpoint to inspect. Neither changes a run's figures.
IN_PROCESS = ["--set", "suite.isolate=false", "--set", "suite.keep_checkpoints=true"]
#: Figures a resumed run must reproduce exactly.
FIGURES = ["run", "status", "steps_done", "train_loss_final", "eval_loss", "eval_top1"]
STEPS_PER_RUN = 18  # 48 samples / 8 per step = 6 steps an epoch, 3 epochs
TOYS_ENV = "deqbench.testing.train_toys:TrainToys"


@pytest.fixture(scope="module")
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "tiny.toml"
    path.write_text(TRAIN)
    return path


@pytest.fixture(scope="module")
def reference(toys, suite_file, tmp_path_factory) -> Path:
    """An uninterrupted in-process run of the suite (its checkpoints kept)."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("ref") / "ref.csv"
    result = CliRunner().invoke(main, ["run", str(suite_file), "--out", str(out), *IN_PROCESS])
    assert result.exit_code == 0, result.output
    return out


def _steps(report: Path) -> pd.DataFrame:
    return read_report(report.with_name(report.stem + ".steps.csv"))


def _assert_same_figures(report: Path, reference: Path) -> pd.DataFrame:
    """``report`` holds each run once, with ``reference``'s figures and step losses."""
    got, want = read_report(report), read_report(reference)
    assert got["run"].tolist() == [0, 1]  # each run once, none lost
    pd.testing.assert_frame_equal(got[FIGURES], want[FIGURES], check_exact=True)
    steps, ref_steps = _steps(report), _steps(reference)
    assert not steps.duplicated(["run", "step"]).any()
    assert steps.groupby("run").size().tolist() == [STEPS_PER_RUN, STEPS_PER_RUN]
    keys = ["run", "step", "mode", "loss"]
    pd.testing.assert_frame_equal(steps[keys], ref_steps[keys], check_exact=True)
    return got


def _deqbench(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "DEQBENCH_PLUGINS": TOYS_ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "deqbench", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _run_and_kill(suite_file: Path, out: Path, delay: float) -> tuple[bool, str]:
    """Run the suite and SIGKILL its process group once run 1 has checkpointed; whether the
    kill landed mid-run 1 (run 0's row written, run 1's not), and the run's output."""
    ckpt = checkpoint_path(out, 1)
    proc = _deqbench(
        str(suite_file), "--out", str(out), "--set", f"model.options.delay_s={delay}",
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    if not out.exists():
        return False, output
    return read_report(out)["run"].tolist() == [0] and ckpt.exists(), output


def test_sigkill_then_resume_equals_an_uninterrupted_run(
    toys, cli, suite_file, reference, tmp_path
):
    for attempt, delay in enumerate((0.05, 0.15, 0.4)):
        out = tmp_path / f"try{attempt}" / "b.csv"
        out.parent.mkdir()
        landed, output = _run_and_kill(suite_file, out, delay)
        if landed:
            break
    else:
        pytest.fail(f"the kill never landed inside run 1, even with 0.4 s steps:\n{output}")
    assert read_report(out)["status"].tolist() == ["completed"]
    finished = out.read_text().splitlines()[:2]  # header and run 0

    # resumed in this process (its run still in a worker): another interpreter start is slow
    args = ["run", str(suite_file), "--resume", str(out), "--set", f"model.options.delay_s={delay}"]
    again = cli.invoke(main, args)
    assert again.exit_code == 0, again.output
    got = _assert_same_figures(out, reference)
    assert (got["status"] == "completed").all()
    assert pd.isna(got["resumed_from_step"][0])  # run 0 was kept, not run again
    resumed = got["resumed_from_step"][1]
    assert 0 < resumed < STEPS_PER_RUN and resumed % 2 == 0  # checkpoint_every = 2
    assert out.read_text().splitlines()[:2] == finished  # the finished row kept as it was
    assert not checkpoint_dir(out).exists()  # keep_checkpoints = false: all removed


def test_ctrl_c_then_resume_replaces_the_interrupted_row(
    toys, cli, suite_file, reference, tmp_path, monkeypatch
):
    forward = train_toys.TinyDEQ.forward
    models: list[int] = []

    def interrupt_run_1_at_step_9(self, x):
        if self.training and id(self) not in models:
            models.append(id(self))
        if (
            self.training and len(models) == 2 and len(self.modes) == 9
        ):  # in epoch 1: its loader RNG matters
            os.kill(os.getpid(), signal.SIGINT)
        return forward(self, x)

    monkeypatch.setattr(train_toys.TinyDEQ, "forward", interrupt_run_1_at_step_9)
    out = tmp_path / "c.csv"
    first = cli.invoke(main, ["run", str(suite_file), "--out", str(out), *IN_PROCESS])
    assert first.exit_code == 130, first.output
    assert read_report(out)["status"].tolist() == ["completed", "interrupted"]
    assert checkpoint_path(out, 1).exists()

    steps_run: list[int] = []

    def count(self, x):
        if self.training and not self.deq.overriding:  # a step, not a gradient check's forward
            steps_run.append(len(self.modes))
        return forward(self, x)

    monkeypatch.setattr(train_toys.TinyDEQ, "forward", count)
    again = cli.invoke(main, ["run", str(suite_file), "--resume", str(out), *IN_PROCESS])
    assert again.exit_code == 0, again.output
    assert len(steps_run) == STEPS_PER_RUN - 8  # only run 1, from its step-8 checkpoint
    got = _assert_same_figures(out, reference)
    assert (got["status"] == "completed").all()
    assert got["resumed_from_step"][1] == 8  # the last checkpoint before step 9


def test_a_changed_suite_is_refused(cli, toys, suite_file, reference):
    files = [*sorted(reference.parent.glob("ref.*.csv")), reference]
    before = {path: path.read_bytes() for path in files}
    args = ["run", str(suite_file), "--resume", str(reference), *IN_PROCESS]
    result = cli.invoke(main, [*args, "--set", "recipe.lr=0.02"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "recipe.lr" in lines[0] and "0.01" in lines[0] and "0.02" in lines[0]
    assert "Traceback" not in result.output
    assert {path: path.read_bytes() for path in files} == before


def test_resume_of_a_solve_suite(cli, tmp_path, monkeypatch):
    suite = tmp_path / "s.toml"
    suite.write_text(SOLVE)
    base_row = SOLVE_KIND.identity

    def interrupt_run_2(suite, run, device):
        if run.index == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return base_row(suite, run, device)

    monkeypatch.setattr(SOLVE_KIND, "identity", interrupt_run_2)
    out = tmp_path / "r.csv"
    first = cli.invoke(main, ["run", str(suite), "--out", str(out)])
    assert first.exit_code == 130, first.output
    assert read_report(out)["status"].tolist()[2:] == ["interrupted"]
    finished = out.read_text().splitlines()[:3]  # header and runs 0, 1

    monkeypatch.setattr(SOLVE_KIND, "identity", base_row)
    again = cli.invoke(main, ["run", str(suite), "--resume", str(out)])
    assert again.exit_code == 0, again.output
    frame = read_report(out)
    assert frame["run"].tolist() == [0, 1, 2]
    assert frame["max_iter"].tolist() == [5, 6, 7]
    assert frame["status"].isin(["converged", "max_iter"]).all()
    assert out.read_text().splitlines()[:3] == finished
    traces = read_report(out.with_name("r.traces.csv"))
    assert sorted(set(traces["run"])) == [0, 1, 2]


def test_the_kept_checkpoint_loads_with_weights_only(reference):
    path = checkpoint_path(reference, 0)
    assert path.is_file()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["run"] == 0 and saved["world_size"] == 1
    state = saved["state"]
    for key in ("model", "optimizer", "scheduler", "scaler"):
        assert isinstance(state[key], dict), key
    assert any(isinstance(v, torch.Tensor) for v in state["model"].values())
    assert state["optimizer"]["state"]  # adam moments after 18 steps
    # keep_checkpoints: the kept checkpoint is the finished run's, its trained weights
    assert state["step"] == STEPS_PER_RUN
    (rng,) = saved["rng"]
    assert isinstance(rng["torch"], torch.Tensor)
    assert {"keys", "pos"} <= set(rng["numpy"]) and rng["python"]["internal"]
    rows = saved["log"]["rows"]
    assert len(rows) == STEPS_PER_RUN
    losses = _steps(reference).query("run == 0")["loss"].tolist()
    assert [r["loss"] for r in rows] == pytest.approx(losses, rel=0, abs=1e-12)


def test_resume_with_another_out_is_refused(cli, toys, suite_file, reference, tmp_path):
    other = tmp_path / "other.csv"
    result = cli.invoke(
        main, ["run", str(suite_file), "--resume", str(reference), "--out", str(other)]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "--resume" in lines[0], result.output
    assert not other.exists()


class _Killed(BaseException):
    """A SIGKILL, in-process: no handler of the runner's catches it, so no row is written."""


def test_a_suite_killed_before_its_first_row_resumes(
    toys, cli, suite_file, reference, tmp_path, monkeypatch
):
    # README's "killed on day 2" when the first run is the long one: only the meta.json and
    # run 0's checkpoint are on disk, and --resume must continue from them.
    from deqbench.execution import checkpoint

    save = checkpoint.save_checkpoint

    def save_then_die(path, payload):
        save(path, payload)
        if payload["run"] == 0 and payload["state"]["step"] == 4:
            raise _Killed

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    out = tmp_path / "k.csv"
    with pytest.raises(_Killed):
        cli.invoke(main, ["run", str(suite_file), "--out", str(out), *IN_PROCESS])
    assert checkpoint_path(out, 0).exists() and read_report(out).empty

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    again = cli.invoke(main, ["run", str(suite_file), "--resume", str(out), *IN_PROCESS])
    assert again.exit_code == 0, again.output
    got = _assert_same_figures(out, reference)
    assert got["resumed_from_step"].tolist()[0] == 4 and pd.isna(got["resumed_from_step"][1])
