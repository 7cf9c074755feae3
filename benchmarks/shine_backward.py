"""SHINE and refine against the exact implicit backward, side by side in one process.

Two settings: the conv cell of ``suites/gradients.toml`` (B=32, 16×32×32) and the CPU MDEQ
(``mdeq-cpu-small``, trained briefly first) on a batch of digits at 32×32 with its
cross-entropy loss, in eval mode. Each forward is Broyden with every pair kept (``m`` = the
forward cap, so SHINE's estimate is the whole solve's); ift's backward is Broyden too (rel
1e-4), as in the MDEQ reference; refine runs ``--refine`` backward steps from shine's or jfb's
estimate. The estimators take turns within each repeat,
so a change in the machine's load hits all of them alike.

Printed per estimator: median backward ms (and IQR), its ratio to ift's on the same batch,
backward NFE, the cosine and relative error of the cell's parameter gradient against an exact
implicit gradient (Anderson forward to rel 1e-6, GMRES backward to rel 1e-7), and the MB saved
for the backward (SHINE's estimate included; parameters not counted).

    python benchmarks/shine_backward.py --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from deqbench.deq import DEQ
from deqbench.gradients import gradient_agreement, reference_gradient
from deqbench.measure.memory import SavedTensorsMeter
from deqbench.models import DEQSettings
from deqbench.plugins import get_cell, get_registry
from deqbench.solvers import Broyden
from deqbench.state import State, pack

ESTIMATORS = {
    "ift": ("ift", {}),
    "shine": ("shine", {}),
    "jfb": ("jfb", {}),
    "refine (shine)": ("refine", {"start": "shine"}),
    "refine (jfb)": ("refine", {"start": "jfb"}),
}


def conv_setting() -> tuple[torch.nn.Module, torch.Tensor, Callable[[State], torch.Tensor], dict]:
    cell = get_cell("conv", channels=16, height=32, width=32, weight_scale=0.5)
    x = torch.randn(32, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    w = torch.randn(16 * 32 * 32, generator=torch.Generator().manual_seed(1))

    def loss(state: State) -> torch.Tensor:  # the solve kind's probe: a fixed linear read-out
        return (pack(state) @ w).mean()

    return cell, x, loss, {"f_max_iter": 60, "f_tol": 1e-4, "b_max_iter": 40}


def digits_setting(steps: int) -> Callable[[], tuple]:
    """The CPU MDEQ trained ``steps`` steps as ``suites/digits.toml`` trains it (Adam 3e-3,
    Anderson + ift, Jacobian penalty 2.0): at initialisation its cell has no equilibrium to
    speak of (Broyden's relative residual stays above 0.5), so no gradient is exact there."""

    def setting() -> tuple:
        torch.manual_seed(0)
        source = get_registry().get("datasets", "digits").obj(image_size=32)
        loader = torch.utils.data.DataLoader(source.dataset("train"), batch_size=64, shuffle=True)
        deq = DEQSettings(solver="anderson", f_tol=1e-3, jac_reg_weight=2.0)
        model = (
            get_registry()
            .get("models", "mdeq-cpu-small")
            .obj(num_classes=10, in_channels=1, deq=deq)
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        done = 0
        while done < steps:
            for x, y in loader:
                if done == steps:
                    break
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y) + model.jac_reg_loss()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                done += 1
        model.eval()  # BatchNorm's running statistics: the same cell for every estimator
        x, y = next(iter(torch.utils.data.DataLoader(source.dataset("test"), batch_size=64)))
        caps = {"f_max_iter": model.deq.f_max_iter, "b_max_iter": model.deq.b_max_iter}

        def loss_fn(state: State) -> torch.Tensor:
            return F.cross_entropy(model.head(state), y)

        return model.cell, x, loss_fn, {**caps, "f_tol": 1e-3}

    return setting


def measure(name: str, setting, reps: int, refine_steps: int, console: Console) -> None:
    cell, x, loss_fn, caps = setting()
    cell.eval()
    params = [p for p in cell.parameters() if p.requires_grad]
    names = [n for n, p in cell.named_parameters() if p.requires_grad]
    layers = {}
    for label, (gradient, options) in ESTIMATORS.items():
        if gradient == "refine":
            options = {**options, "max_iter": refine_steps}
        layers[label] = DEQ(
            cell,
            Broyden(m=caps["f_max_iter"]),
            gradient,
            gradient_options=options,
            b_solver="broyden",
            b_tol=1e-4,
            keep_graph_in_eval=True,
            **caps,
        )
    reference = reference_gradient(cell, x, loss_fn)
    times: dict[str, list[float]] = {label: [] for label in layers}
    rows = {}
    for label, deq in layers.items():  # memory and accuracy first, each alone
        with SavedTensorsMeter(ignore=params) as meter:
            loss = loss_fn(deq(x))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        agreement = gradient_agreement(dict(zip(names, grads, strict=True)), reference.grads)
        b = deq.stats.backward
        rows[label] = (meter.mb, agreement, b.nfe if b is not None else None, deq.stats.forward)
    for _ in range(reps):
        for label, deq in layers.items():
            loss = loss_fn(deq(x))
            start = time.perf_counter()
            torch.autograd.grad(loss, params, allow_unused=True)
            times[label].append((time.perf_counter() - start) * 1e3)
    forward = rows["ift"][3]
    table = Table(
        title=f"{name}: forward broyden, {forward.nfe} NFE (rel residual "
        f"{float(forward.result.rel_residual.max()):.1e}); {reps} repeats, "
        f"{torch.get_num_threads()} threads"
    )
    for column in ("estimator", "bwd ms", "IQR", "× ift", "b NFE", "grad cos", "rel err", "MB"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    ift_ms = statistics.median(times["ift"])
    for label, (mb, agreement, b_nfe, _) in rows.items():
        q = statistics.quantiles(times[label], n=4) if reps > 1 else [times[label][0]] * 3
        ms = statistics.median(times[label])
        table.add_row(
            label,
            f"{ms:.1f}",
            f"{q[2] - q[0]:.1f}",
            f"{ms / ift_ms:.2f}",
            "–" if b_nfe is None else str(b_nfe),
            f"{agreement.cosine:.4f}",
            f"{agreement.rel_error:.1%}",
            f"{mb:.2f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--refine", type=int, default=5, help="refine's backward steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=110, help="digits: 5 epochs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    console = Console()
    measure("conv cell (B=32, 16×32×32)", conv_setting, args.reps, args.refine, console)
    title = f"mdeq-cpu-small on digits (B=64, 32×32, trained {args.train_steps} steps)"
    measure(title, digits_setting(args.train_steps), args.reps, args.refine, console)


if __name__ == "__main__":
    main()
