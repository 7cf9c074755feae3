"""Problem cells for solve-only suites: small fixed-weight maps with known character.

Registered by the light entry module `deqbench_plugins.problems_plugin`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deqbench.cell import Cell
from deqbench.state import State

SPECTRA = ("gaussian", "symmetric", "orthogonal")


def _check_scale(name: str, value: float, *, zero_ok: bool) -> None:
    """A scale option is a finite real number, above zero (or at least zero), not a bool:
    a NaN or infinite weight would make every run of the problem diverge at its first step."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _matrix(dim: int, spectral_norm: float, spectrum: str, gen: torch.Generator) -> Tensor:
    """A ``dim × dim`` matrix with largest singular value ``spectral_norm``.

    gaussian: a random matrix (mixed spectrum); symmetric: real eigenvalues spread over
    [−ρ, ρ] with ±ρ included; orthogonal: ρ·Q, every eigenvalue complex with modulus ρ (the
    slow case for naive iteration and for power-iteration diagnostics).
    """
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    if spectrum == "gaussian":
        w = a
    elif spectrum == "symmetric":
        q, _ = torch.linalg.qr(a)
        lam = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
        w = q @ torch.diag(lam) @ q.T
    elif spectrum == "orthogonal":
        w, _ = torch.linalg.qr(a)
    else:
        raise ValueError(f"spectrum must be one of {', '.join(SPECTRA)}, got {spectrum!r}")
    return w * (spectral_norm / torch.linalg.matrix_norm(w, ord=2))


class TanhCell(Cell):
    """``z ↦ tanh(W z + U x)``: a contraction when ‖W‖₂ < 1 (tanh is 1-Lipschitz)."""

    def __init__(
        self,
        dim: int = 256,
        input_dim: int | None = None,
        spectral_norm: float = 0.9,
        spectrum: str = "gaussian",
        injection_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        input_dim = dim if input_dim is None else input_dim
        for name, size in (("dim", dim), ("input_dim", input_dim)):
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {size!r}")
        _check_scale("spectral_norm", spectral_norm, zero_ok=False)
        _check_scale("injection_scale", injection_scale, zero_ok=True)
        if spectrum not in SPECTRA:
            raise ValueError(f"spectrum must be one of {', '.join(SPECTRA)}, got {spectrum!r}")
        gen = torch.Generator().manual_seed(seed)
        w = _matrix(dim, spectral_norm, spectrum, gen)
        u = torch.randn(dim, input_dim, generator=gen, dtype=torch.float64)
        self.linear = nn.Linear(dim, dim, bias=False)
        self.injection = nn.Linear(input_dim, dim, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.injection.weight.copy_(u * (injection_scale / input_dim**0.5))
        self.input_shape = (input_dim,)

    def inject(self, x: Tensor) -> Tensor:
        return self.injection(x)

    def init_state(self, injection: Tensor) -> State:
        return (torch.zeros_like(injection),)

    def forward(self, z: State, injection: Tensor) -> State:
        return (torch.tanh(self.linear(z[0]) + injection),)


class ConvCell(Cell):
    """A residual conv block in the MDEQ style, on a ``(C, H, W)`` state:

    ``f(z) = GN(relu(z + conv2(relu(GN(conv1(z)))) + inj))``, ``inj = conv_in(x)``.

    ``weight_scale`` is the gain of ``conv2`` (its weights are ``N(0, weight_scale² / fan_in)``),
    so it sets how strongly the branch feeds back. At the default 32×32×16 and ``rel`` tol 1e-4:
    0.5 is easy (fixed-point iteration converges in about 40 steps, Anderson in about 20); 1.1
    is hard (about 250 and 130); from about 1.3 on, nothing converges. ``conv1``'s scale does not
    matter: the GroupNorm after it removes it.
    """

    def __init__(
        self,
        channels: int = 16,
        height: int = 32,
        width: int = 32,
        groups: int = 4,
        weight_scale: float = 0.5,
        injection_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if channels < 1 or height < 1 or width < 1:
            raise ValueError(f"channels, height, width must be >= 1, got {channels, height, width}")
        if groups < 1 or channels % groups:
            raise ValueError(f"groups must divide channels ({channels}), got {groups}")
        _check_scale("weight_scale", weight_scale, zero_ok=False)
        _check_scale("injection_scale", injection_scale, zero_ok=True)
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv_in = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.norm_out = nn.GroupNorm(groups, channels)
        fan_in = channels * 9
        for conv, gain in (
            (self.conv1, 1.0),
            (self.conv2, weight_scale),
            (self.conv_in, injection_scale),
        ):
            w = torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64)
            with torch.no_grad():
                conv.weight.copy_(w * (gain / fan_in**0.5))
        self.input_shape = (channels, height, width)

    def inject(self, x: Tensor) -> Tensor:
        return self.conv_in(x)

    def init_state(self, injection: Tensor) -> State:
        return (torch.zeros_like(injection),)

    def forward(self, z: State, injection: Tensor) -> State:
        (x,) = z
        branch = self.conv2(torch.relu(self.norm1(self.conv1(x))))
        return (self.norm_out(torch.relu(x + branch + injection)),)
