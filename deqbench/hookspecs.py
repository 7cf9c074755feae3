"""Plugin hooks. A plugin implements any of these and calls ``register`` once per thing it adds:

@deqbench.hookimpl
def register_solvers(register):
    register("my-solver", MySolver, description="what it does")
"""

from __future__ import annotations

import pluggy

PROJECT = "deqbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The kinds of things a plugin can register, in display order.
KINDS = ("solvers", "gradients", "cells", "models", "heads", "datasets", "run_kinds", "loggers")


@hookspec
def register_solvers(register):
    """Register root solvers: classes or factories taking options, returning a `Solver`."""


@hookspec
def register_gradients(register):
    """Register gradient estimators: factories returning a `GradientEstimator`."""


@hookspec
def register_cells(register):
    """Register equilibrium cells: factories returning a `Cell` module."""


@hookspec
def register_models(register):
    """Register models: factories returning an `nn.Module` built around a DEQ."""


@hookspec
def register_heads(register):
    """Register task heads: factories returning an `nn.Module`."""


@hookspec
def register_datasets(register):
    """Register datasets: factories returning a dataset or data module."""


@hookspec
def register_run_kinds(register):
    """Register kinds of run: `deqbench.runs.kind.RunKind` instances, named as a suite's
    ``[suite] kind`` names them."""


@hookspec
def register_loggers(register):
    """Register experiment loggers: factories taking the options of the suite's
    ``[logging.options.<name>]`` and returning a `deqbench.loggers.RunLogger`, named as
    ``[logging] loggers`` names them."""


@hookspec(firstresult=True)
def explain_unknown(kind, name):
    """Say why ``name`` is not registered as one of ``kind`` though this plugin provides it
    (an optional dependency is not installed): a short reason naming what to install, or None.
    Asked only when a lookup finds no such name."""
