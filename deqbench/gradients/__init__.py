"""Gradient estimators: the interface and the built-ins (registered in `deqbench.builtins`)."""

from deqbench.builtins import GRADIENTS, resolved
from deqbench.gradients.base import (
    GradContext,
    GradientEstimator,
    ReentrantBackwardError,
    check_pairing,
)
from deqbench.gradients.ift import IFT
from deqbench.gradients.jfb import JFB
from deqbench.gradients.phantom import Phantom
from deqbench.gradients.reference import (
    CellGradient,
    GradientAgreement,
    gradient_agreement,
    parameter_gradient,
    reference_gradient,
)
from deqbench.gradients.refine import Refine
from deqbench.gradients.shine import SHINE
from deqbench.gradients.unrolled import Unrolled

#: (name, class, description) of the estimators the core registers through its own hooks; the
#: names and descriptions come from `deqbench.builtins.GRADIENTS`, which is torch-free.
BUILTIN = resolved(GRADIENTS)

__all__ = [
    "BUILTIN",
    "IFT",
    "JFB",
    "SHINE",
    "CellGradient",
    "GradContext",
    "GradientAgreement",
    "GradientEstimator",
    "Phantom",
    "ReentrantBackwardError",
    "Refine",
    "Unrolled",
    "check_pairing",
    "gradient_agreement",
    "parameter_gradient",
    "reference_gradient",
]
