"""deqbench's DEQ layer against TorchDEQ's ``get_deq`` core, on the same MDEQ cell.

One training step (forward, cross-entropy, backward) of an MDEQ variant, driven once by
deqbench's `DEQ` (the model's own layer) and once by TorchDEQ with the same solver, caps and
tolerances (rel stop 1e-3 forward; ift with fixed-point backward, 1e-4), side by side in one
process, alternating. Printed per (variant, solver): median step ms, forward NFE and the MB
saved for backward (activations only, parameters not counted).

    python benchmarks/mdeq_vs_torchdeq.py --batch 32 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torchdeq import get_deq

from deqbench.measure import sync
from deqbench.memory import SavedTensorsMeter
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


def measure(step, model, reps: int, device) -> tuple[list[float], float, float]:
    times, nfe = [], 0.0
    for k in range(reps + 1):  # the first is a warm-up
        sync(device)
        t0 = time.perf_counter()
        loss, nfe = step()
        loss.backward()
        sync(device)
        if k:
            times.append((time.perf_counter() - t0) * 1e3)
        model.zero_grad(set_to_none=True)
    with SavedTensorsMeter(ignore=list(model.parameters())) as meter:
        loss, _ = step()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return times, nfe, meter.mb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--variants", default="mdeq-cifar-tiny:3:18,mdeq-cpu-small:1:8")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    table = Table(title=f"one training step, batch {args.batch}, {device.type}")
    for col in (
        "variant",
        "solver",
        "deqbench ms",
        "torchdeq ms",
        "ratio",
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
            ours = measure(
                lambda m=model, x=x, y=y: deqbench_step(m, x, y), model, args.reps, device
            )
            theirs = measure(
                lambda m=model, c=core, x=x, y=y: torchdeq_step(m, c, x, y),
                model,
                args.reps,
                device,
            )
            a, b = statistics.median(ours[0]), statistics.median(theirs[0])
            table.add_row(
                name,
                solver,
                f"{a:.0f}",
                f"{b:.0f}",
                f"{a / b:.2f}",
                f"{ours[1]:.0f} / {theirs[1]:.1f}",
                f"{ours[2]:.1f} / {theirs[2]:.1f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
