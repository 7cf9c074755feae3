"""How an MDEQ's weights start: the reference implementation's effective init, or its intended one.

locuslab/mdeq's ``init_weights`` draws every ``nn.Conv2d`` weight and bias from N(0, 0.01) (and
sets BatchNorm's affine weights to 1, biases to 0: PyTorch's defaults). By the time it runs,
weight norm has replaced the cell convs' ``weight`` parameter by ``weight_g`` and ``weight_v``
and left ``weight`` a derived tensor that the next forward recomputes, so the draw is lost: the
weight-normed convs keep PyTorch's default conv init (kaiming-uniform with a = √5, std
1/√(3·fan_in): 0.039 for CIFAR tiny's first conv), gain = ‖direction‖. Every conv without weight
norm (stem, fusion, head) does get N(0, 0.01).

The published results were trained from that *effective* init: ``init = "reference"``, the
default. ``init = "intended"`` draws the weight-normed directions from N(0, 0.01) as well.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from deqbench.errors import ConfigError, did_you_mean

INITS = ("reference", "intended")
STD = 0.01  #: the reference's N(0, 0.01)


def check_init(init: str) -> str:
    """``init`` if it names a scheme; a `ConfigError` with "did you mean" otherwise."""
    if init not in INITS:
        hint = did_you_mean(str(init), INITS)
        raise ConfigError(f"mdeq: init {init!r} is not one of {', '.join(INITS)}{hint}")
    return init


def init_direction(v: Tensor, init: str) -> Tensor:
    """Fill a weight-normed conv's direction ``v`` (out, in, k, k) in place, as ``init`` says."""
    if check_init(init) == "reference":
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Conv2d's own default
    else:
        nn.init.normal_(v, 0.0, STD)
    return v


def init_plain_convs(module: nn.Module) -> None:
    """Draw every ``nn.Conv2d`` weight and bias in ``module`` from N(0, 0.01), as the reference
    does for the convs it reaches (weight-normed convs are not ``nn.Conv2d`` here)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, STD)
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, STD)
