"""The DEQ layer's settings, declared once.

`DEQSpec` is the one declaration: a model's ``deq`` (`deqbench.DEQSettings`, which adds
``build``) is one, a training suite's ``[deq]`` table
(`deqbench.suite.train_tables.DEQTable`) is built from its fields, and the keywords of
`deqbench.deq.DEQ` and the defaults of `deqbench.gradients.GradContext` come from it.

Torch-free, so validating a suite stays fast and the layer can take its defaults from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

# Field constraints are pydantic's: the suite's [deq] table validates by them (this dataclass
# itself does not validate; `DEQ` checks the values it is given).
from pydantic import Field

PosInt = Annotated[int, Field(ge=1)]
StopMode = Literal["abs", "rel"]


def _layer(default: Any) -> dict[str, Any]:
    """Field metadata: a bare `DEQ` layer's default, where it is not the setting's default."""
    return {"layer": default}


@dataclass(frozen=True)
class DEQSpec:
    """How a model's DEQ layer solves and differentiates (a suite's ``[deq]`` table).

    The defaults are a model's; a bare `DEQ` layer defaults otherwise where a field's
    ``layer`` metadata says so (`layer_defaults`). ``f_max_iter`` / ``b_max_iter`` None take
    the variant's published caps (`deqbench.DEQSettings.build`); a bare layer's are 30.
    """

    solver: str = field(default="anderson", metadata=_layer("fixed-point"))  #: forward solver
    solver_options: dict[str, Any] = field(default_factory=dict, metadata=_layer(None))
    gradient: str = "ift"  #: the gradient estimator
    gradient_options: dict[str, Any] = field(default_factory=dict, metadata=_layer(None))
    #: the forward solve's iteration cap; None: the model variant's published cap
    f_max_iter: PosInt | None = field(default=None, metadata=_layer(30))
    f_tol: Annotated[float, Field(gt=0)] = 1e-3
    #: the backward solver of estimators that solve one (ift); may be affine-only
    b_solver: str = "fixed-point"
    b_solver_options: dict[str, Any] = field(default_factory=dict, metadata=_layer(None))
    #: the backward solve's iteration cap; None: the model variant's published cap
    b_max_iter: PosInt | None = field(default=None, metadata=_layer(30))
    b_tol: Annotated[float, Field(gt=0)] = 1e-4
    stop_mode: StopMode = "rel"  #: of the forward solve
    b_stop_mode: StopMode | None = None  #: of the backward solve; None: as stop_mode
    #: > 0: a Hutchinson Jacobian penalty of this weight is computed (add `jac_reg_loss`)
    jac_reg_weight: Annotated[float, Field(ge=0)] = 0.0
    #: the fraction of training forwards that compute it (deterministically spaced)
    jac_reg_freq: Annotated[float, Field(ge=0, le=1)] = 1.0
    jac_reg_samples: PosInt = 1  #: its number of probes
    jac_reg_probe: Literal["gaussian", "rademacher"] = "gaussian"  #: its probes' distribution


def layer_defaults() -> dict[str, Any]:
    """Each setting's default in a bare `DEQ` layer (the keywords' defaults)."""
    out = {}
    for f in dataclasses.fields(DEQSpec):
        if "layer" in f.metadata:
            out[f.name] = f.metadata["layer"]
        else:
            out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return out
