"""Path independence of a DEQ model (Anil et al., NeurIPS 2022): does the forward solve reach
the same equilibrium, and the same prediction, whatever state it starts from?

Each batch is solved from its default start (the cell's ``init_state``) and again from other
starts, through `deqbench.deq.DEQ.init`:

- ``noise``: Gaussian noise whose per-sample scale (RMS) is the default equilibrium's, drawn
  from a generator seeded with ``seed`` (deterministic, on the CPU, then moved);
- ``swap``: another input's equilibrium, the batch's default ``z*`` rolled by one sample
  (sample ``i`` starts at sample ``i - 1``'s equilibrium; a batch of one starts at its own).

Per start it reports which predictions (the argmax over dim 1 of the logits: per sample, or per
pixel for segmentation) equal the default start's, and each sample's ``‖z*_start − z*‖ / ‖z*‖``.
A path-independent model agrees everywhere and its distances are near the solver's tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from deqbench.models import Model

#: The starts `path_independence` knows by name, besides the default one.
STARTS = ("noise", "swap")


@dataclass(frozen=True)
class PathResult:
    """One start's outcome on a batch, against the default start's."""

    agree: Tensor  #: bool, a prediction's shape: (B,) or (B, H, W); True where they agree
    distance: Tensor  #: (B,) ‖z*_start − z*_default‖ / ‖z*_default‖ per sample

    @property
    def agreement(self) -> float:
        """The fraction of predictions (samples, or pixels) equal to the default start's."""
        return float(self.agree.float().mean())

    @property
    def distance_median(self) -> float:
        """The median over samples of the relative distance between the equilibria."""
        return float(self.distance.float().median())


def start_from(name: str, z_star: Tensor, seed: int = 0) -> Tensor:
    """The (B, D) start named ``name`` (one of `STARTS`) for a batch whose default equilibrium
    is ``z_star`` (B, D)."""
    if name == "swap":
        return z_star.roll(1, dims=0)
    if name == "noise":
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(z_star.shape, generator=gen, dtype=torch.float32)
        scale = z_star.float().pow(2).mean(dim=1, keepdim=True).sqrt()
        return (noise.to(z_star.device) * scale).to(z_star.dtype)
    raise ValueError(f"unknown start {name!r}; known: {', '.join(STARTS)}")


@torch.no_grad()
def path_independence(
    model: Model,
    x: Tensor,
    starts: Iterable[str] = STARTS,
    *,
    seed: int = 0,
    reference: tuple[Tensor, Tensor] | None = None,
    predict: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, PathResult]:
    """Solve ``x`` with ``model`` (an implicit `deqbench.models.Model`) from each of ``starts``
    (names in `STARTS`) and compare with the default start. The model solves as it stands
    (its mode and its DEQ's settings); `deqbench.deq.DEQ.overridden` restores the layer and its
    ``stats`` afterwards.

    ``reference``: the default start's ``(logits, z*)`` for this ``x`` when the caller has them
    (``z*`` flat (B, D), as ``model.stats.forward.result.z``); else one more forward finds them.
    ``predict`` maps logits to predictions (default: the argmax over dim 1).
    """
    deq = model.deq
    if deq is None:
        raise ValueError(f"{type(model).__name__} is explicit: it solves for no equilibrium")
    predict = predict or (lambda logits: logits.argmax(dim=1))
    if reference is None:
        logits = model(x)
        reference = (logits, _solved(model))
    logits, z_star = reference
    z_star = z_star.detach()
    default = predict(logits)
    out = {}
    for name in starts:
        start = start_from(name, z_star, seed)
        with deq.overridden(init=lambda z0, bound, start=start: start):
            other = model(x)
            z_other = _solved(model)
        out[name] = PathResult(predict(other) == default, _relative(z_other, z_star))
    return out


def _solved(model: Model) -> Tensor:
    stats = model.stats
    if stats is None or stats.forward is None:
        raise ValueError(
            f"{type(model).__name__}'s forward recorded no forward solve (unrolled mode, or an "
            "estimator that unrolls the forward?); path independence needs one"
        )
    return stats.forward.result.z.detach()


def _relative(z: Tensor, ref: Tensor) -> Tensor:
    """(B,) ‖z − ref‖ / ‖ref‖ per sample, in float32 at least (0 where both are 0)."""
    z, ref = z.float(), ref.float()
    gap = (z - ref).norm(dim=1)
    size = ref.norm(dim=1)
    return torch.where(gap == 0, torch.zeros_like(gap), gap / size.clamp_min(1e-30))
