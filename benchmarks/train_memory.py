"""Implicit against explicit training memory: one training step of MDEQ (ift), the explicit
MDEQ control (the same cell unrolled L times) and ResNet-18/50, at the same input size.

Printed per model: the MB autograd saved for backward (activations; parameters not counted)
and the peak memory of live tensors during forward + backward (CUDA: peak allocated after a
reset; CPU: `LiveTensorMeter`, a measuring pass), plus their ratio to the MDEQ's.

    python benchmarks/train_memory.py --variant cifar-tiny --batch 32 --size 32
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from deqbench.measure.memory import SavedTensorsMeter
from deqbench.measure.timing import LiveTensorMeter, cuda_peak
from deqbench.models import DEQSettings, parameter_count
from deqbench.plugins import get_registry


def step(model, x, y) -> None:
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def measure(model, x, y, device) -> tuple[float, float]:
    step(model, x, y)  # warm-up (allocator, lazy kernels)
    with SavedTensorsMeter(ignore=list(model.parameters())) as saved:
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        with cuda_peak(device) as out:
            step(model, x, y)
        return saved.mb, out["peak_mb"]
    with LiveTensorMeter() as live:
        step(model, x, y)
    return saved.mb, live.peak_mb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="cifar-tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--depths", default="6,12,24")
    p.add_argument("--resnets", default="resnet18,resnet50")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    registry = get_registry()
    common = {"num_classes": 10, "image_size": args.size}
    models = [
        (
            f"mdeq-{args.variant} (ift)",
            registry.get("models", f"mdeq-{args.variant}").obj(
                deq=DEQSettings(gradient="ift"), **common
            ),
        )
    ]
    for depth in map(int, args.depths.split(",")):
        models.append(
            (
                f"explicit-mdeq L={depth}",
                registry.get("models", "explicit-mdeq").obj(
                    variant=args.variant, depth=depth, **common
                ),
            )
        )
    for name in filter(None, args.resnets.split(",")):
        models.append((name, registry.get("models", name).obj(**common)))
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    kind = "CUDA peak allocated" if device.type == "cuda" else "peak live tensors"
    table = Table(title=f"one training step, batch {args.batch}, {args.size}², {device.type}")
    for col in ("model", "params M", "saved MB", "× MDEQ", f"{kind} MB", "× MDEQ"):
        table.add_column(col)
    base = None
    for name, model in models:
        torch.manual_seed(0)
        model = model.to(device).train()
        saved, peak = measure(model, x, y, device)
        base = base or (saved, peak)
        table.add_row(
            name,
            f"{parameter_count(model) / 1e6:.2f}",
            f"{saved:.1f}",
            f"{saved / base[0]:.2f}",
            f"{peak:.1f}",
            f"{peak / base[1]:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
