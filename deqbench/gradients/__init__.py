"""Gradient estimators: the interface and the built-ins (registered in `deqbench.builtins`)."""

from deqbench.gradients.base import GradContext, GradientEstimator
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
from deqbench.gradients.unrolled import Unrolled

#: (name, factory, description) of the estimators the core registers through its own hooks.
BUILTIN: tuple = (
    ("ift", IFT, "exact implicit gradient: solves g = Jᵀg + v with any registered solver"),
    ("jfb", JFB, "Jacobian-free: the gradient passes through one application of f"),
    ("phantom", Phantom, "k damped unrolled steps from z* (options k, tau)"),
    ("unrolled", Unrolled, "backprop through the whole forward iteration (explicit baseline)"),
)

__all__ = [
    "BUILTIN",
    "IFT",
    "JFB",
    "CellGradient",
    "GradContext",
    "GradientAgreement",
    "GradientEstimator",
    "Phantom",
    "Unrolled",
    "gradient_agreement",
    "parameter_gradient",
    "reference_gradient",
]
