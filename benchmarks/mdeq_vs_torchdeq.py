"""deqbench's DEQ layer against TorchDEQ's ``get_deq`` core, on the same MDEQ cell.

One training step (forward, cross-entropy, backward) of an MDEQ variant, driven once by
deqbench's `DEQ` (the model's own layer) and once by TorchDEQ with the same solver, caps and
tolerances (rel stop 1e-3 forward; ift with fixed-point backward, 1e-4), side by side in one
process, alternating step by step. Printed per (variant, solver): median step ms (and range),
the ratio of the medians, the median of the ratios of each pair of neighbouring steps (which
cancels a change in the machine's load between pairs), forward NFE and the MB saved for
backward (activations only, parameters not counted).

``--load N`` runs N busy processes (one spinning Python loop each) for the whole measurement
and kills them afterwards: cores shared with other work, reproducibly. ``--threads`` sets
torch's thread count; how OpenMP threads wait (``OMP_WAIT_POLICY``) is the environment's, and
the title says which.

    python benchmarks/mdeq_vs_torchdeq.py --batch 32 --reps 5
    python benchmarks/mdeq_vs_torchdeq.py --reps 3 --load 1
    OMP_WAIT_POLICY=PASSIVE python benchmarks/mdeq_vs_torchdeq.py --reps 3 --load 1 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torchdeq import get_deq

from deqbench.measure.memory import SavedTensorsMeter
from deqbench.measure.openmp import describe as openmp_wait
from deqbench.measure.timing import sync
from deqbench.models import DEQSettings
from deqbench.plugins import get_registry

TORCHDEQ_SOLVER = {"anderson": "anderson", "broyden": "broyden"}


def build(name: str, solver: str, in_channels: int, cap: int):
    settings = DEQSettings(solver=solver, f_max_iter=cap, b_max_iter=cap, f_tol=1e-3, b_tol=1e-4)
    return (
        get_registry()
        .get("models", name)
        .obj(num_classes=10, in_channels=in_channels, deq=settings)
    )


def torchdeq_step(model, core, x, y):
    cell = model.cell
    cell.reset()
    inj = cell.inject(x)
    z0 = cell.init_state(inj)
    z_out, info = core(lambda *z: cell(tuple(z), inj), z0)
    loss = F.cross_entropy(model.head(tuple(z_out[-1])), y)
    return loss, float(info["nstep"].float().mean())


def deqbench_step(model, x, y):
    loss = F.cross_entropy(model(x), y)
    return loss, float(model.stats.forward.nfe)


@contextlib.contextmanager
def busy_load(n: int) -> Iterator[None]:
    """``n`` processes that spin on a core each while the block runs, killed when it ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def timed_step(step, model, device) -> tuple[float, float]:
    """One training step: (ms, forward NFE)."""
    sync(device)
    t0 = time.perf_counter()
    loss, nfe = step()
    loss.backward()
    sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    model.zero_grad(set_to_none=True)
    return ms, nfe


def saved_mb(step, model) -> float:
    with SavedTensorsMeter(ignore=list(model.parameters())) as meter:
        loss, _ = step()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return meter.mb


def measure(steps, model, reps: int, device) -> list[tuple[list[float], float, float]]:
    """Times of ``reps`` steps of each of ``steps``, taken in turns (so a change in the
    machine's load falls on both), after one warm-up step each; then the last NFE and the
    saved MB of each."""
    times: list[list[float]] = [[] for _ in steps]
    nfes = [0.0 for _ in steps]
    for k in range(reps + 1):  # the first is a warm-up
        for i, step in enumerate(steps):
            ms, nfes[i] = timed_step(step, model, device)
            if k:
                times[i].append(ms)
    return [(t, n, saved_mb(s, model)) for t, n, s in zip(times, nfes, steps, strict=True)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--variants", default="mdeq-cifar-tiny:3:18,mdeq-cpu-small:1:8")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--load", type=int, default=0, help="busy processes running meanwhile")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    title = (
        f"one training step, batch {args.batch}, {device.type}, {torch.get_num_threads()} threads,"
        f" {args.load} busy process(es), OpenMP wait: {openmp_wait()}"
    )
    table = Table(title=title)
    for col in (
        "variant",
        "solver",
        "deqbench ms (range)",
        "torchdeq ms (range)",
        "ratio",
        "paired ratio",
        "NFE d / nstep t",
        "saved MB d/t",
    ):
        table.add_column(col)
    for spec in args.variants.split(","):
        name, channels, cap = spec.split(":")
        for solver in ("anderson", "broyden"):
            torch.manual_seed(0)
            model = build(name, solver, int(channels), int(cap)).to(device).train()
            core = get_deq(
                f_solver=TORCHDEQ_SOLVER[solver],
                f_max_iter=int(cap),
                f_tol=1e-3,
                f_stop_mode="rel",
                b_solver="fixed_point_iter",
                b_max_iter=int(cap),
                b_tol=1e-4,
                b_stop_mode="rel",
                ift=True,
            )
            x = torch.randn(args.batch, int(channels), 32, 32, device=device)
            y = torch.randint(0, 10, (args.batch,), device=device)
            steps = (
                lambda m=model, x=x, y=y: deqbench_step(m, x, y),
                lambda m=model, c=core, x=x, y=y: torchdeq_step(m, c, x, y),
            )
            with busy_load(args.load):
                ours, theirs = measure(steps, model, args.reps, device)
            a, b = statistics.median(ours[0]), statistics.median(theirs[0])
            paired = statistics.median(o / t for o, t in zip(ours[0], theirs[0], strict=True))
            table.add_row(
                name,
                solver,
                f"{a:.0f} ({min(ours[0]):.0f}–{max(ours[0]):.0f})",
                f"{b:.0f} ({min(theirs[0]):.0f}–{max(theirs[0]):.0f})",
                f"{a / b:.2f}",
                f"{paired:.2f}",
                f"{ours[1]:.0f} / {theirs[1]:.1f}",
                f"{ours[2]:.1f} / {theirs[2]:.1f}",
            )
    Console(width=160).print(table)  # full rows when piped, too


if __name__ == "__main__":
    main()
