"""What deqbench's training runner costs: it against a plain hand-written PyTorch loop.

Both train the same registered model on the same data with the same seed and recipe (Adam,
cosine schedule, no weight decay) for N steps, side by side in one process, alternating
``--rounds`` times. Printed: the median step time of each (the runner's as it records it, the
plain loop's timed the same way: from one step's end to the next's, data loading included),
their ratio, and whether the two loss curves are identical.

    python benchmarks/harness_overhead.py                       # mdeq-cpu-small on digits
    python benchmarks/harness_overhead.py --model tiny-deq --dataset blobs --toys
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from deqbench import plugins
from deqbench.hookspecs import hookimpl
from deqbench.models import DEQSettings
from deqbench.plugins import get_registry
from deqbench.runs.train.run import train_run
from deqbench.suite.train import load_train_suite


def make_run(args: argparse.Namespace):
    data = {
        "suite": {"name": "overhead", "kind": "train", "seed": args.seed, "device": "cpu"},
        "dataset": {"name": args.dataset, "image_size": args.image_size, "batch_size": args.batch},
        "model": {"name": args.model},
        "deq": {"solver": args.solver, "gradient": args.gradient, "f_max_iter": args.f_max_iter},
        "recipe": {"optimizer": "adam", "lr": args.lr, "schedule": "cosine", "steps": args.steps},
        "eval": {"every_epochs": 0, "max_batches": 1},
    }
    return load_train_suite(Path("<harness_overhead>"), data).runs[0]


def plain_loop(args: argparse.Namespace, source) -> tuple[list[float], list[float]]:
    """The loop a user would write by hand; returns (losses, step ms)."""
    torch.manual_seed(args.seed)
    info = source.info
    factory = get_registry().get("models", args.model).obj
    deq = DEQSettings(solver=args.solver, gradient=args.gradient, f_max_iter=args.f_max_iter)
    model = factory(
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        image_size=args.image_size,
        deq=deq,
    )
    dataset = source.dataset(info.train_split)
    # torch's seeded per-epoch shuffle, as deqbench's runner samples (one rank of a DDP job)
    sampler = DistributedSampler(
        dataset, num_replicas=1, rank=0, shuffle=True, seed=args.seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    # two groups as deqbench builds them (weight decay 0 in both: the same updates as one)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.Adam([{"params": decay}, {"params": rest}], lr=args.lr, weight_decay=0.0)
    steps = args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    losses, times = [], []
    done = 0
    last = time.perf_counter()
    while done < steps:
        sampler.set_epoch(done // len(loader))
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            now = time.perf_counter()
            times.append((now - last) * 1e3)
            last = now
            done += 1
            if done == steps:
                break
    return [float(v) for v in losses], times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mdeq-cpu-small")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--solver", default="anderson")
    parser.add_argument("--gradient", default="ift")
    parser.add_argument("--f-max-iter", type=int, default=18)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--toys", action="store_true", help="register deqbench's test toys")
    parser.add_argument(
        "--tv-resnet18",
        action="store_true",
        help="register torchvision's resnet18 as model 'tv-resnet18' (an explicit stand-in)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    extra = []
    if args.toys:
        from deqbench.testing.train_toys import TrainToys

        extra.append(("train-toys", TrainToys()))
    if args.tv_resnet18:
        extra.append(("tv-resnet18", _TorchvisionResNet()))
    if extra:
        plugins.reset_registry(*extra)
    run = make_run(args)
    from deqbench.runs.train.build import build_source

    source = build_source(run)
    device = torch.device("cpu")
    runner_ms, plain_ms, identical = [], [], True
    for _ in range(args.rounds):
        losses, times = plain_loop(args, source)
        plain_ms += times[1:]  # the first step of each: warm-up
        out = train_run(run, device, source=source)
        ours = [r["loss"] for r in out.steps]
        identical &= ours == losses
        runner_ms += out.step_ms[1:]  # its own step times, taken as the plain loop's
        if out.metrics["status"] != "completed":
            raise SystemExit(f"runner: {out.metrics}")
    r, p = statistics.median(runner_ms), statistics.median(plain_ms)
    print(f"model {args.model} on {args.dataset} {args.image_size}px, batch {args.batch}, "
          f"{args.solver}/{args.gradient}, {args.steps} steps × {args.rounds} rounds, "
          f"{args.threads} threads, torch {torch.__version__}")  # fmt: skip
    print("| loop | step ms median | ratio |")
    print("|---|---|---|")
    print(f"| plain PyTorch | {p:.2f} | 1.000 |")
    print(f"| deqbench runner | {r:.2f} | {r / p:.3f} |")
    print(f"loss curves identical: {identical}")


class _TorchvisionResNet:
    @hookimpl
    def register_models(self, register):
        register("tv-resnet18", tv_resnet18, description="torchvision resnet18, explicit")


def tv_resnet18(*, num_classes, in_channels=3, image_size=None, head=None, deq=None, **_):
    import torchvision

    from deqbench.models import Model

    class Wrapped(Model):
        def __init__(self) -> None:
            super().__init__()
            self.net = torchvision.models.resnet18(num_classes=num_classes)
            self.net.conv1 = torch.nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)

        def forward(self, x):
            return self.net(x)

    return Wrapped()


if __name__ == "__main__":
    main()
