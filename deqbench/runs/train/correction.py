"""DEQ-Flow's fixed-point correction loss (Bai, Geng and Kolter, "Deep Equilibrium Optical Flow
Estimation", CVPR 2022), as the recipe's ``fpc_k`` and ``fpc_gamma`` ask.

The DEQ layer samples ``k`` points z_1 … z_k of each training solve, evenly over its iteration
cap, z_k being the final iterate (`deqbench.solvers.trajectory`: no extra solver iteration).
Each intermediate sample gets a one-step gradient, ẑ_j = f(z_j.detach()), and the head's loss
on it joins the step's loss:

    loss = L(head(z*), y)  +  Σ_{j<s} γ^(s−j) · L(head(ẑ_j), y)

The first term is the step's ordinary loss, through the run's gradient estimator: it is
DEQ-Flow's last term (weight γ⁰ = 1), which DEQ-Flow too differentiates with the implicit
gradient when asked to. s is the segment of the solve's final evaluation: k when the solve runs
to the cap, fewer when it stops early; the sample just before the end always weighs γ.
"""

from __future__ import annotations

from torch import Tensor

from deqbench.data import DatasetInfo
from deqbench.errors import ConfigError
from deqbench.models import Model
from deqbench.runs.train.settings import LoopSettings


def enable_correction(model: Model, k: int) -> None:
    """Make ``model``'s DEQ layer sample ``k`` iterates of each training solve (k ≤ 1: none,
    the loss alone is the ordinary one). A model that cannot take the loss is one
    `ConfigError` line: an explicit one, one without `Model.head_logits`, a cap under ``k``."""
    if k <= 1:
        if model.deq is not None:
            model.deq.keep_iterates = 0
        return
    name = type(model).__name__
    if model.deq is None:
        raise ConfigError(
            f"recipe.fpc_k: {name} is an explicit model; fixed-point correction needs a DEQ layer"
        )
    if type(model).head_logits is Model.head_logits:
        raise ConfigError(
            f"recipe.fpc_k: {name} does not implement Model.head_logits(state, x), which "
            "fixed-point correction needs"
        )
    cap = model.deq.f_max_iter
    if k > cap:
        raise ConfigError(f"recipe.fpc_k: {k} samples of a solve capped at f_max_iter = {cap}")
    model.deq.keep_iterates = k


def correction_loss(
    model: Model, x: Tensor, y: Tensor, *, settings: LoopSettings, info: DatasetInfo
) -> Tensor | float:
    """Σ_j γ^(s−j) · L(head(f(z_j)), y) over the intermediate samples of the last training
    forward on ``x`` (0.0 when there are none: the option off, warm-up, explicit models).
    Takes the layer's trajectory (and clears it, so that its graph goes with the step)."""
    deq = model.deq
    trajectory = deq.trajectory if deq is not None else None
    if trajectory is None:
        return 0.0
    deq.trajectory = None
    total: Tensor | float = 0.0
    for exponent, state in trajectory.corrected():
        loss = settings.loss(model.head_logits(state, x), y, info)
        total = total + settings.fpc_gamma**exponent * loss
    return total
