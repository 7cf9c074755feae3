"""What a solver may hand a gradient estimator: its estimate of the inverse Jacobian.

A quasi-Newton solve of ``z = f(z)`` builds an estimate of ``(I − J)⁻¹``, ``J = ∂f/∂z``, as it
goes. The implicit backward needs exactly that matrix, transposed: its adjoint is
``(I − Jᵀ)⁻¹ v``. SHINE (Ramzi et al., ICLR 2022) applies the forward's estimate instead of
solving a second system. The seam is solver-agnostic: a solver whose class sets
``offers_inverse`` returns an `InverseJacobian` in ``SolverResult.inverse`` when it is called
with ``keep_inverse=True`` (only then: keeping one costs memory), and the DEQ layer hands it
to the estimator in ``GradContext.inverse``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import Tensor


class InverseJacobian(abc.ABC):
    """An estimate of ``(I − J)⁻¹`` at the end of a solve, per sample, on ``(B, D)`` states."""

    @abc.abstractmethod
    def apply(self, w: Tensor) -> Tensor:
        """``≈ (I − J)⁻¹ w`` for each sample (``(B, D)`` → ``(B, D)``)."""

    @abc.abstractmethod
    def adjoint(self, w: Tensor) -> Tensor:
        """``≈ (I − J)⁻ᵀ w``: the implicit backward's answer for incoming gradient ``w``."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Memory the estimate holds."""


@dataclass(frozen=True, eq=False)
class LowRankInverse(InverseJacobian):
    """``(I − J)⁻¹ ≈ I − Σᵢ uᵢ vᵢᵀ`` per sample, from ``n`` rank-1 pairs (``n = 0``: ``I``).

    Broyden's estimate of the inverse Jacobian of ``g(z) = f(z) − z`` is ``H = −I + Σ uᵢ vᵢᵀ``,
    and ``(I − J)⁻¹ = −(J − I)⁻¹ ≈ −H``.
    """

    u: Tensor  #: (B, n, D)
    v: Tensor  #: (B, n, D)

    def __post_init__(self) -> None:
        if self.u.dim() != 3 or self.u.shape != self.v.shape:
            raise ValueError(
                f"u and v must be (B, n, D) alike, got {tuple(self.u.shape)} and "
                f"{tuple(self.v.shape)}"
            )

    @property
    def rank(self) -> int:
        """The number of pairs ``n``."""
        return self.u.shape[1]

    def apply(self, w: Tensor) -> Tensor:
        return _minus_outer(w, self.u, self.v)

    def adjoint(self, w: Tensor) -> Tensor:
        return _minus_outer(w, self.v, self.u)

    @property
    def nbytes(self) -> int:
        return self.u.nbytes + self.v.nbytes


def _minus_outer(w: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``w − Σᵢ leftᵢ (rightᵢ · w)`` per sample, in ``w``'s dtype."""
    if left.shape[1] == 0:
        return w.clone()
    left, right = left.to(w.dtype), right.to(w.dtype)
    coef = torch.bmm(right, w.unsqueeze(2))  # (B, n, 1): rightᵢ · w
    return w - torch.bmm(left.transpose(1, 2), coef).squeeze(2)


def held_tensors(inverse: InverseJacobian | None) -> list[Tensor]:
    """The tensors among ``inverse``'s attributes: what a backward that keeps it holds (and
    passes to ``save_for_backward``, so that memory meters count them)."""
    if inverse is None:
        return []
    return [t for t in vars(inverse).values() if isinstance(t, Tensor)]
