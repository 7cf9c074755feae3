"""Refine: a few iterations of the implicit backward, warm-started from a cheap estimate.

SHINE's "+ refine" variant (Ramzi et al., ICLR 2022): the backward solve ``g = Jᵀ g + v`` of
`deqbench.gradients.ift.IFT` starts from SHINE's ``(I − Jᵀ)⁻¹ v`` as the forward solver
estimated it, or from JFB's ``v``, instead of zero, and runs a small capped number of steps.
As the cap grows it becomes the exact implicit gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from deqbench.gradients.base import GradContext
from deqbench.gradients.ift import IFT

STARTS = ("shine", "jfb")


@dataclass(kw_only=True)
class Refine(IFT):
    """`IFT` started from ``start``'s estimate, with ``max_iter`` 5 unless set otherwise.

    ``start``: ``"shine"`` (the forward solver's inverse-Jacobian estimate; needs a solver
    that offers one) or ``"jfb"`` (the incoming gradient itself).
    """

    start: str = "shine"
    max_iter: int | None = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.max_iter is not None and self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")

    @property
    def needs_inverse(self) -> bool:  # type: ignore[override]
        return self.start == "shine"

    def warm_start(self, v: Tensor, ctx: GradContext) -> Tensor:
        if self.start == "jfb":
            return v.clone()
        if ctx.inverse is None:
            raise ValueError(
                "refine from shine needs the forward solver's inverse-Jacobian estimate "
                "(GradContext.inverse)"
            )
        return ctx.inverse.adjoint(v)
