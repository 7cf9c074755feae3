"""Entry module of the ``problems`` plugin: registers the problem cells of
`deqbench_plugins.problems` by ``"module:attr"`` string, so listing them imports no torch."""

from __future__ import annotations

from deqbench.hookspecs import hookimpl

_MODULE = "deqbench_plugins.problems"

#: (name, "module:attr", description) of the cells for solve-only suites.
CELLS: tuple[tuple[str, str, str], ...] = (
    ("tanh", f"{_MODULE}:TanhCell", "z ↦ tanh(Wz + Ux), W of chosen spectral norm"),
    ("conv", f"{_MODULE}:ConvCell", "residual conv–GroupNorm–ReLU block, MDEQ style"),
)


@hookimpl
def register_cells(register):
    for name, target, description in CELLS:
        register(name, target, description=description)
