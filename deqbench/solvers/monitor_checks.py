"""The monitor's checks on the solver that drives it: the rules of the solver guide and
`MonitorMisuse`, which names the rule a solver broke.

The monitor's compiled loops do not check bounds, so every call a solver makes is checked
first, in O(1) Python (shapes, dtypes, devices, the budget).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deqbench.errors import DeqbenchError

# The rules of docs/writing-a-solver-plugin.md that a misuse breaks, as its message names them.
RULE_OBSERVE = "rule 1: observe each evaluation of f, at the point f was called at"
RULE_RETURN = "rule 1: return as soon as observe returns True"
RULE_HOLD = "rule 2: hold diverged samples with hold_diverged(step, z), both like z0"


class MonitorMisuse(DeqbenchError, ValueError):
    """A solver used its `Monitor` against the rules of the solver guide (an iterate unlike
    ``z0``, an evaluation past the budget, norms never written, ...). Raised before anything
    reaches a compiled kernel; the message names the rule."""


def describe(t: object) -> str:
    """What ``t`` is, for a message: a tensor's shape, dtype and device, else its type."""
    if isinstance(t, Tensor):
        return f"a {tuple(t.shape)} {t.dtype} tensor on {t.device}"
    return f"a {type(t).__name__}"


class MonitorChecks:
    """The checks `Monitor` runs on the tensors a solver hands it (a base of `Monitor`, which
    sets what they compare against from ``z0``)."""

    _shape: torch.Size
    _dtype: torch.dtype
    _device: torch.device
    _dims: tuple[int, ...]
    _np_dtype: np.dtype  # the traces' dtype, on the host

    def _check(self, method: str, name: str, t: Tensor) -> None:
        """Raise `MonitorMisuse` unless ``t`` is a tensor of ``z0``'s shape, dtype and device."""
        try:
            ok = t.shape == self._shape and t.dtype == self._dtype and t.device == self._device
        except (AttributeError, TypeError):  # not a tensor
            ok = False
        if not ok:
            rule = RULE_HOLD if method == "hold_diverged" else RULE_OBSERVE
            raise MonitorMisuse(
                f"{method}: {name} must have z0's shape, dtype and device, {self._dims} "
                f"{self._dtype} on {self._device}; got {describe(t)} ({rule})"
            )

    def _view(self, name: str, t: Tensor) -> np.ndarray:
        """``t`` (an argument of `observe`) as a NumPy view for a kernel, checked like `_check`
        but on the view, which costs less than the tensor's attributes."""
        try:
            a = t.numpy()
        except Exception:  # it requires grad (fine once detached), or it is unlike z0
            self._check("observe", name, t)
            a = t.detach().numpy()
        if a.shape != self._dims or a.dtype != self._np_dtype:
            self._check("observe", name, t)
        return a

    def _unwritten(self) -> MonitorMisuse:
        return MonitorMisuse(
            "observe_norms: monitor.norms holds no norms for this evaluation (a negative "
            "value; the buffer starts at -1): write ‖f(z) − z‖ and ‖f(z)‖ into it first, or call "
            f"observe(z, fz) ({RULE_OBSERVE})"
        )
