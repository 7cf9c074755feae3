"""Entry module of the ``torchdeq`` plugin: TorchDEQ's solvers and implicit backward, only when
TorchDEQ is installed.

The classes live in `deqbench_plugins.torchdeq_solvers` (its docstring says how their results
are rebuilt from TorchDEQ's); this module registers them by ``"module:attr"`` string and finds
TorchDEQ with `importlib.util.find_spec`, so listing them imports neither torch nor TorchDEQ.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from deqbench.hookspecs import hookimpl

_MODULE = "deqbench_plugins.torchdeq_solvers"

#: (name, "module:attr", description) of the adapted solvers.
SOLVERS: tuple[tuple[str, str, str], ...] = (
    ("torchdeq-fixed-point", f"{_MODULE}:TorchDEQFixedPoint", "TorchDEQ's fixed-point iteration"),
    (
        "torchdeq-anderson",
        f"{_MODULE}:TorchDEQAnderson",
        "TorchDEQ's Anderson acceleration (absolute ridge)",
    ),
    (
        "torchdeq-broyden",
        f"{_MODULE}:TorchDEQBroyden",
        "TorchDEQ's Broyden (memory grows with max_iter)",
    ),
)

#: (name, "module:attr", description) of the adapted gradient estimators.
GRADIENTS: tuple[tuple[str, str, str], ...] = (
    ("torchdeq-ift", f"{_MODULE}:TorchDEQIFT", "TorchDEQ's implicit backward (ift)"),
)


def _installed() -> bool:
    """Whether TorchDEQ can be found, without importing it (and torch with it)."""
    try:
        return importlib.util.find_spec("torchdeq") is not None
    except (ImportError, ValueError):  # a broken or half-imported installation
        return False


@hookimpl
def register_solvers(register):
    if not _installed():
        return  # not installed: nothing to adapt
    for name, target, description in SOLVERS:
        register(name, target, description=description)


@hookimpl
def register_gradients(register):
    if not _installed():
        return
    for name, target, description in GRADIENTS:
        register(name, target, description=description)


#: What installs TorchDEQ: the ``[compare]`` extra of pyproject.toml.
INSTALL = "pip install 'deqbench[compare]'"


@hookimpl
def explain_unknown(kind: str, name: str) -> str | None:
    """A TorchDEQ name asked for without TorchDEQ: say which extra installs it, rather than
    "did you mean" a built-in of a similar name."""
    table = {"solvers": SOLVERS, "gradients": GRADIENTS}.get(kind, ())
    if any(name == entry[0] for entry in table) and not _installed():
        return f"it needs TorchDEQ, not installed; install the [compare] extra: {INSTALL}"
    return None


def __getattr__(name: str) -> Any:
    # The classes lived here before the split: keep ``torchdeq_adapter.TorchDEQAnderson`` working.
    if name.startswith("TorchDEQ"):
        return getattr(importlib.import_module(_MODULE), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
