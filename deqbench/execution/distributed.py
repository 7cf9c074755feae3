"""Training under torch.distributed: one process per GPU (or CPU rank), launched by torchrun.

Every rank runs the whole suite in step with the others; the suite's ``batch_size`` is the
global batch, split evenly over the ranks. Rank 0 alone writes the report and draws the
display. Data is split by samplers (`TrainSampler`, `EvalSampler`), the model is wrapped in
`DistributedDataParallel` (`wrap_model`) and the figures of a run are combined over the ranks
(`reduce_metrics`, `reduce_eval`) so the report describes the whole job, not rank 0's part.

Without torchrun (``WORLD_SIZE`` unset or 1) everything here is the identity, so the same code
path trains on one device.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

from deqbench.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env() -> Dist:
    """The ranks torchrun declares in the environment (`SINGLE` when there is none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = tdist.get_backend() if tdist.is_initialized() else ""
    return Dist(rank, world, local, backend)


def init(device: torch.device) -> Dist:
    """Join the process group torchrun set up: NCCL on CUDA, gloo on the CPU. Idempotent."""
    dist = from_env()
    if not dist.enabled:
        return dist
    if not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(dist.local_rank)
        tdist.init_process_group(backend)
    return from_env()


#: Where rank 0 of a `relaunch`ed job leaves the exit code torchrun would not pass on.
EXIT_FILE = "DEQBENCH_EXIT_FILE"


def relaunch(nproc: int, argv: list[str] | None = None) -> int:
    """Run ``torchrun --standalone --nproc_per_node=N -m deqbench ...`` (the same command line
    without ``--nproc``) and return the exit code: what ``deqbench run --nproc N`` does.

    A job whose runs ended, some of them failed, exits 0 under torchrun (`exit_code`), which
    reports any other code as a crash; rank 0 leaves the suite's own code in a file for this
    process to return. Ctrl-C is left to torchrun, which passes it on to the ranks."""
    import signal
    import subprocess
    import tempfile

    argv = list(sys.argv[1:] if argv is None else argv)
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "deqbench", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryDirectory(prefix="deqbench-") as tmp:
        code_file = os.path.join(tmp, "exit-code")
        job = subprocess.Popen(command, env={**os.environ, EXIT_FILE: code_file})
        interrupted: list[int] = []  # torchrun gets the Ctrl-C too (the terminal's group)
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
        try:
            code = job.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
        if code == 0 and os.path.exists(code_file):
            code = int(Path(code_file).read_text().strip() or 0)
    return 130 if interrupted else code


def exit_code(code: int, dist: Dist) -> int:
    """The code a rank exits with when its suite ended with ``code`` (1: some run failed).
    Under torchrun that is 0, since torchrun takes any other code for a crashed rank; rank 0
    leaves ``code`` for `relaunch` to return. Interrupts (130) pass as they are."""
    if not dist.enabled or code in (0, 130):
        return code
    path = os.environ.get(EXIT_FILE)
    if path and dist.is_main:
        Path(path).write_text(str(code))
    return 0


def from_main(value: Any, dist: Dist) -> Any:
    """Rank 0's ``value`` on every rank (a default report name stamped with the time, say)."""
    if not dist.enabled:
        return value
    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def rank_device(device: torch.device, dist: Dist) -> torch.device:
    """Each rank's own GPU (``cuda:LOCAL_RANK``); the CPU stays the CPU."""
    if dist.enabled and device.type == "cuda":
        return torch.device("cuda", dist.local_rank)
    return device


def rank_batch(batch_size: int, dist: Dist, key: str = "dataset.batch_size") -> int:
    """The per-rank share of a global batch; it must split evenly."""
    if batch_size % dist.world_size:
        raise ConfigError(
            f"{key} = {batch_size} does not split evenly over {dist.world_size} ranks; "
            f"give a multiple of {dist.world_size}"
        )
    return batch_size // dist.world_size


# -- data -----------------------------------------------------------------------------------------
class TrainSampler(DistributedSampler):
    """`DistributedSampler` (reshuffled from ``seed + epoch`` by `set_epoch`, rank ``r`` taking
    every ``world``-th index) that can start part-way into an epoch, for resuming.

    With one rank it is a seeded shuffle; the global batch of step k is the same set of samples
    whatever the number of ranks, so 1 and N processes train on the same data.
    """

    def __init__(self, dataset: Dataset, dist: Dist, seed: int, shuffle: bool = True) -> None:
        super().__init__(
            dataset,
            num_replicas=dist.world_size,
            rank=dist.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=True,
        )
        self.start = 0  #: indices of this rank's share to skip in the current epoch

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class EvalSampler(Sampler[int]):
    """Rank ``r`` evaluates samples ``r, r + world, ...``: every sample exactly once over the
    ranks (no padding, unlike `DistributedSampler`), so reduced metrics cover the whole set."""

    def __init__(self, dataset: Dataset, dist: Dist) -> None:
        self.n, self.dist = len(dataset), dist

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.dist.rank, self.n, self.dist.world_size))

    def __len__(self) -> int:
        return max(0, math.ceil((self.n - self.dist.rank) / self.dist.world_size))


# -- the model ------------------------------------------------------------------------------------
def wrap_model(model: nn.Module, dist: Dist, device: torch.device, warmup: bool):
    """``model`` in `DistributedDataParallel` (the module itself with one rank).

    On CUDA every BatchNorm becomes a SyncBatchNorm (`sync_batchnorm`); SyncBatchNorm has no
    CPU kernel, so gloo ranks keep per-rank statistics. The implicit backward needs nothing special:
    its backward solve runs inside the autograd graph of ``f(z*)`` and differentiates only with
    respect to ``z``, so DDP's gradient hooks fire once per parameter, after it. A run with an
    unrolled warm-up trains two graphs, and DDP is told to look for unused parameters.
    """
    if not dist.enabled:
        return model
    model = sync_batchnorm(model, device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=warmup)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """On CUDA, every BatchNorm becomes a SyncBatchNorm: statistics over the global batch, so N
    ranks normalise as one process would (and Cityscapes' small per-GPU crops get usable
    statistics). On the CPU, where SyncBatchNorm has no kernel, the model is left as it is."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


# -- figures --------------------------------------------------------------------------------------
#: How each figure of a training row combines over ranks; unlisted figures are rank 0's.
REDUCE: Mapping[str, str] = {
    "peak_mem_mb": "max",
    "rss_peak_mb": "max",
    "saved_mb": "max",
    "step_ms_median": "max",
    "backward_ms_median": "max",
    "step_ms_iqr": "max",
    "f_rel_residual_final": "max",
    "f_rel_residual_median_final": "max",
    "eval_f_rel_residual_median": "max",
    "f_nfe_mean": "mean",
    "b_nfe_mean": "mean",
    "f_converged_frac": "mean",
}


def reduce_metrics(metrics: dict[str, Any], dist: Dist) -> None:
    """Combine ``metrics`` over the ranks in place, as `REDUCE` says (one collective per op).
    A figure missing on a rank is left out of its mean and max."""
    if not dist.enabled:
        return
    for op in ("max", "mean"):
        keys = sorted(k for k, how in REDUCE.items() if how == op)
        values = [metrics.get(k) for k in keys]
        have = torch.tensor([v is not None for v in values], dtype=torch.float64)
        data = torch.tensor(
            [float(v) if v is not None else (-math.inf if op == "max" else 0.0) for v in values],
            dtype=torch.float64,
        )
        if op == "max":
            all_reduce(data, tdist.ReduceOp.MAX)
        else:
            all_reduce(data)
        all_reduce(have)
        for key, value, count in zip(keys, data.tolist(), have.tolist(), strict=True):
            if count:
                metrics[key] = value / count if op == "mean" else value


def all_reduce(tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
    """In-place all-reduce (SUM by default) that works for CPU tensors under NCCL too."""
    op = tdist.ReduceOp.SUM if op is None else op
    if tdist.get_backend() == "nccl" and tensor.device.type != "cuda":
        moved = tensor.cuda()
        tdist.all_reduce(moved, op)
        tensor.copy_(moved.cpu())
    else:
        tdist.all_reduce(tensor, op)
    return tensor


def mean_over_ranks(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks (the tensor itself with one rank)."""
    if not dist.enabled:
        return tensor
    return all_reduce(tensor.clone()) / dist.world_size


def barrier(dist: Dist) -> None:
    if dist.enabled:
        tdist.barrier()
