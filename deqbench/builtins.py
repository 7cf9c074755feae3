"""deqbench's own solvers and estimators, registered through the same hooks as any plugin.

They are registered as ``"module:attr"`` strings, so listing them imports no torch; the
descriptions live here, beside the names, for the same reason.
"""

from __future__ import annotations

import importlib
from typing import Any

from deqbench.hookspecs import hookimpl

_S = "deqbench.solvers"
_G = "deqbench.gradients"

#: (name, "module:attr", description) of the solvers the core registers through its own hooks.
SOLVERS: tuple[tuple[str, str, str], ...] = (
    (
        "fixed-point",
        f"{_S}.fixed_point:FixedPoint",
        "naive fixed-point iteration, optional damping",
    ),
    ("anderson", f"{_S}.anderson:Anderson", "Anderson acceleration, window m, scale-free ridge"),
    (
        "broyden",
        f"{_S}.broyden:Broyden",
        "limited-memory good Broyden, fixed m pairs, optional line search",
    ),
    ("gmres", f"{_S}.gmres:GMRES", "restarted GMRES(m), affine maps only (the implicit backward)"),
)

#: (name, "module:attr", description) of the gradient estimators the core registers.
GRADIENTS: tuple[tuple[str, str, str], ...] = (
    (
        "ift",
        f"{_G}.ift:IFT",
        "exact implicit gradient: solves g = Jᵀg + v with any registered solver",
    ),
    ("jfb", f"{_G}.jfb:JFB", "Jacobian-free: the gradient passes through one application of f"),
    (
        "shine",
        f"{_G}.shine:SHINE",
        "applies the forward solver's inverse-Jacobian estimate (SHINE; broyden forward)",
    ),
    (
        "refine",
        f"{_G}.refine:Refine",
        "ift warm-started from shine's or jfb's estimate, capped (5 steps by default)",
    ),
    ("phantom", f"{_G}.phantom:Phantom", "k damped unrolled steps from z* (options k, tau)"),
    (
        "unrolled",
        f"{_G}.unrolled:Unrolled",
        "backprop through the whole forward iteration (explicit baseline)",
    ),
)


#: (name, "module:attr", description) of the kinds of run the core registers.
RUN_KINDS: tuple[tuple[str, str, str], ...] = (
    ("solve", "deqbench.runs.solve.kind:SOLVE", "solvers and estimators on cells at fixed weights"),
    ("train", "deqbench.runs.train.kind:TRAIN", "models trained, evaluated and checkpointed"),
)


#: (name, "module:attr", description) of the experiment loggers the core registers.
LOGGERS: tuple[tuple[str, str, str], ...] = (
    (
        "tensorboard",
        "deqbench.report.tensorboard:TensorBoardLogger",
        "per-step scalars and evaluations to <report>.tensorboard/ (needs tensorboard)",
    ),
)


def resolved(table: tuple[tuple[str, str, str], ...]) -> tuple[tuple[str, Any, str], ...]:
    """``table`` with each ``"module:attr"`` target imported: ``(name, object, description)``."""
    out = []
    for name, target, description in table:
        module, _, attr = target.partition(":")
        out.append((name, getattr(importlib.import_module(module), attr), description))
    return tuple(out)


@hookimpl
def register_solvers(register):
    for name, target, description in SOLVERS:
        register(name, target, description=description)


@hookimpl
def register_gradients(register):
    for name, target, description in GRADIENTS:
        register(name, target, description=description)


@hookimpl
def register_run_kinds(register):
    for name, target, description in RUN_KINDS:
        register(name, target, description=description)


@hookimpl
def register_loggers(register):
    for name, target, description in LOGGERS:
        register(name, target, description=description)
