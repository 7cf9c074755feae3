"""deqbench's own solvers and estimators, registered through the same hooks as any plugin."""

from __future__ import annotations

from deqbench import gradients, solvers
from deqbench.hookspecs import hookimpl


@hookimpl
def register_solvers(register):
    for name, factory, description in solvers.BUILTIN:
        register(name, factory, description=description)


@hookimpl
def register_gradients(register):
    for name, factory, description in gradients.BUILTIN:
        register(name, factory, description=description)
