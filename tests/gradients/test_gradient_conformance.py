"""The gradient conformance kit on every registered estimator, and on estimators it must reject."""

from __future__ import annotations

import pytest
import torch

from deqbench.gradients import IFT, GradientEstimator
from deqbench.plugins import get_registry
from deqbench.testing import check_gradient


@pytest.mark.parametrize("name", get_registry().names("gradients"))
def test_every_registered_estimator_conforms(name):
    check = check_gradient(name)
    assert check.cosine > 0.9  # all built-ins point where ift points on this contraction


@pytest.mark.parametrize(
    ("name", "options"),
    [("phantom", {"k": 2, "tau": 0.7}), ("unrolled", {"steps": 5}), ("ift", {"solver": "gmres"})],
)
def test_estimators_conform_with_options(name, options):
    check_gradient(name, options=options)


def test_the_kit_reports_the_recorded_backward_nfe():
    ift = check_gradient("ift")
    # the toy is a 0.5-contraction solved to 1e-12 from zero: 22 fixed-point evaluations
    assert ift.b_nfe == 22
    assert check_gradient("jfb").b_nfe is None  # solves nothing, records nothing


def test_the_kit_rejects_an_inexact_ift():
    with pytest.raises(AssertionError, match="relative error"):
        check_gradient(IFT(max_iter=3))


class _Reversed(GradientEstimator):
    """Right value, gradient pointing the wrong way."""

    def __call__(self, f, z_star, ctx):
        fz = f(z_star)
        return 2 * fz.detach() - fz


class _Shifted(GradientEstimator):
    """Right gradient, wrong value."""

    def __call__(self, f, z_star, ctx):
        return f(z_star) + 1e-3


class _Stateful(GradientEstimator):
    """A second backward gives a different gradient."""

    def __call__(self, f, z_star, ctx):
        fz = f(z_star)
        scale = iter(range(1, 100))
        return _ScaleGrad.apply(fz, lambda: next(scale))


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale(), None


@pytest.mark.parametrize(
    ("bad", "message"),
    [(_Reversed(), "cosine"), (_Shifted(), "value"), (_Stateful(), "second backward")],
)
def test_the_kit_rejects_broken_estimators(bad, message):
    with pytest.raises(AssertionError, match=message):
        check_gradient(bad)
