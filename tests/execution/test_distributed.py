"""Training under torch.distributed: samplers, the torchrun relaunch, and a 2-process gloo run
on the CPU against a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from deqbench import plugins
from deqbench.cli import main
from deqbench.errors import ConfigError
from deqbench.execution import distributed
from deqbench.execution.distributed import Dist, EvalSampler, TrainSampler, rank_batch
from deqbench.report.results import read_report
from deqbench.testing.train_toys import TrainToys

SUITE = """
[suite]
name = "ddp"
kind = "train"
seed = 11
device = "cpu"
threads = 1
checkpoint_every = 4
keep_checkpoints = true

[dataset]
name = "blobs"
image_size = 4
batch_size = 8
options = { train = 48, eval = 15 }

[model]
name = "tiny-deq"

[deq]
f_max_iter = 12

[recipe]
optimizer = "sgd"  # unlike Adam's, its update scales with the gradient: a wrong reduction shows
lr = 0.1
epochs = 3
unrolled_warmup_steps = 2

[matrix]
"deq.gradient" = ["ift", "jfb"]
"""


def test_train_sampler_splits_each_global_batch_over_the_ranks():
    data = list(range(50))
    single = list(TrainSampler(data, Dist(), seed=4))
    for world in (2, 4):
        parts = [list(TrainSampler(data, Dist(r, world), seed=4)) for r in range(world)]
        per_rank = 8 // world
        for k in range(len(parts[0]) // per_rank):
            shares = [p[k * per_rank : (k + 1) * per_rank] for p in parts]
            assert sorted(i for share in shares for i in share) == sorted(
                single[k * 8 : (k + 1) * 8]
            )


def test_train_sampler_resumes_part_way_and_reshuffles_by_epoch():
    sampler = TrainSampler(list(range(20)), Dist(), seed=0)
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.start = 6
    assert list(sampler) == whole[6:] and len(sampler) == 14
    sampler.set_epoch(2)
    assert list(sampler) != whole[6:]


def test_eval_sampler_covers_every_sample_once():
    data = list(range(10))
    seen = [i for r in range(3) for i in EvalSampler(data, Dist(r, 3))]
    assert sorted(seen) == data
    assert [len(EvalSampler(data, Dist(r, 3))) for r in range(3)] == [4, 3, 3]


def test_global_batch_must_split_evenly():
    assert rank_batch(64, Dist(0, 4)) == 16
    with pytest.raises(ConfigError, match="batch_size = 10 does not split evenly over 4 ranks"):
        rank_batch(10, Dist(0, 4))


def test_every_model_on_cuda_gets_sync_batchnorm_and_the_cpu_keeps_its_own():
    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    synced = distributed.sync_batchnorm(net(), cuda)  # converting needs no GPU
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    kept = distributed.sync_batchnorm(net(), cpu)  # SyncBatchNorm has no CPU kernel
    assert type(kept[1]) is torch.nn.BatchNorm2d


def test_nproc_relaunches_under_torchrun(monkeypatch):
    seen = {}

    class FakeJob:
        def __init__(self, argv, env):
            seen.update(argv=argv, env=env)

        def wait(self):  # rank 0 of a suite with a failed run leaves its code
            with open(seen["env"][distributed.EXIT_FILE], "w") as fh:
                fh.write("1")
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeJob)
    argv = ["run", "s.toml", "--nproc", "4", "--out", "r.csv", "--nproc=4"]
    assert distributed.relaunch(4, argv) == 1
    argv = seen["argv"]
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert argv[5:] == ["-m", "deqbench", "run", "s.toml", "--out", "r.csv"]


def test_ranks_exit_0_for_failed_runs_and_leave_the_code(monkeypatch, tmp_path):
    path = tmp_path / "code"
    monkeypatch.setenv(distributed.EXIT_FILE, str(path))
    assert distributed.exit_code(1, Dist(1, 2)) == 0 and not path.exists()  # rank 1 is quiet
    assert distributed.exit_code(1, Dist(0, 2)) == 0 and path.read_text() == "1"
    assert distributed.exit_code(130, Dist(0, 2)) == 130
    assert distributed.exit_code(1, Dist()) == 1  # one process: the suite's own code


def test_without_torchrun_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.init(torch.device("cpu"))
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1


@pytest.fixture
def toys():
    yield plugins.reset_registry(("train-toys", TrainToys()))
    plugins.reset_registry()


def test_two_gloo_processes_train_as_one(toys, cli, tmp_path):
    """The issue's check: 2 processes with half the batch each make the same updates as one
    process with the whole batch, and the report has one row per run over the whole eval set."""
    suite = tmp_path / "ddp.toml"
    suite.write_text(textwrap.dedent(SUITE))
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(one)])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "DEQBENCH_PLUGINS": "deqbench.testing.train_toys:TrainToys"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "deqbench", "run", str(suite), "--out", str(two), "--nproc", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 ranks (gloo, cpu)" in proc.stdout

    a, b = read_report(one), read_report(two)
    assert b["run"].tolist() == [0, 1]  # one row per run, written by rank 0 alone
    assert (b["status"] == "completed").all() and (b["world_size"] == 2).all()
    assert (b["batch_size"] == 8).all()  # the global batch
    for column in ("eval_loss", "eval_top1", "train_loss_final"):
        assert b[column].tolist() == pytest.approx(a[column].tolist(), rel=1e-5, abs=1e-7)
    steps_a = read_report(one.with_name("one.steps.csv"))
    steps_b = read_report(two.with_name("two.steps.csv"))
    assert len(steps_b) == len(steps_a) == 2 * 18
    assert steps_b["loss"].tolist() == pytest.approx(steps_a["loss"].tolist(), rel=1e-5)
    # The same final parameters (keep_checkpoints keeps the finished run's): the same updates.
    for run in (0, 1):
        name = f"run-{run:04d}.pt"
        sa = torch.load(tmp_path / "one.checkpoints" / name, weights_only=True)["state"]
        sb = torch.load(tmp_path / "two.checkpoints" / name, weights_only=True)["state"]
        assert sa["step"] == sb["step"] == 18
        for key, value in sa["model"].items():
            torch.testing.assert_close(sb["model"][key], value, rtol=1e-5, atol=1e-6)
    meta = json.loads(two.with_name("two.meta.json").read_text())
    assert meta["distributed"] == {"backend": "gloo", "world_size": 2}
