"""The MDEQ cell: conformance, dropout masks, weight norm once per forward, init, the tuple
contract of `bind`, and the implicit gradient against an unrolled float64 reference."""

from __future__ import annotations

import pytest
import torch

from deqbench.cell import Cell
from deqbench.deq import DEQ, CellContractError
from deqbench.plugins import get_cell
from deqbench.testing import check_cell
from deqbench_plugins.mdeq.cell import MDEQCell, VariationalDropout2d, WNConv2d


def _cell(**kw) -> MDEQCell:
    opts = {"channels": (8, 16), "expansion": 2, "in_channels": 3, "image_size": 8}
    return MDEQCell(**{**opts, **kw})


def test_registered_cell_passes_the_conformance_kit():
    torch.manual_seed(0)
    check_cell(get_cell("mdeq", channels=(8, 16, 16), expansion=2, image_size=8, dropout=0.2))


def test_init_state_is_zero_at_halving_resolutions():
    cell = _cell(channels=(8, 8, 8))
    z = cell.init_state(cell.inject(torch.randn(2, 3, 9, 9)))
    assert [tuple(t.shape) for t in z] == [(2, 8, 9, 9), (2, 8, 5, 5), (2, 8, 3, 3)]
    assert all(not t.any() for t in z)
    out = cell(z, cell.inject(torch.randn(2, 3, 9, 9)))  # odd sizes fuse without mismatch
    assert [t.shape for t in out] == [t.shape for t in z]


def test_weight_norm_intended_init_is_n_0_001_and_starts_at_v():
    torch.manual_seed(0)  # the default is the reference's effective init: tests/test_mdeq_init
    conv = WNConv2d(64, 128, 3, init="intended")
    assert conv.weight_v.std().item() == pytest.approx(0.01, rel=0.05)
    conv.compute()
    torch.testing.assert_close(conv._weight, conv.weight_v.detach())


def _masks_per_call(cell: MDEQCell) -> list[list[torch.Tensor]]:
    calls: list[list[torch.Tensor]] = []
    original = cell.forward

    def recording(z, injection):
        out = original(z, injection)
        drops = [m for m in cell.modules() if isinstance(m, VariationalDropout2d)]
        calls.append([d.mask.clone() for d in drops])
        return out

    cell.forward = recording  # instance attribute: nn.Module.__call__ finds it
    return calls


def test_dropout_mask_is_constant_across_iterations_and_backward_and_redrawn():
    torch.manual_seed(0)
    cell = _cell(dropout=0.5)
    calls = _masks_per_call(cell)
    deq = DEQ(cell, "fixed-point", "ift", f_max_iter=5, b_max_iter=5, f_tol=1e-30, b_tol=1e-30)
    x = torch.randn(3, 3, 8, 8)
    out = deq(x)
    sum(t.square().sum() for t in out).backward()
    first = calls[:]
    assert len(first) >= 6  # 5 solver steps + the differentiable application
    for masks in first:
        assert masks[0].shape == (3, 8, 1, 1)
        for a, b in zip(masks, first[0], strict=True):
            assert torch.equal(a, b)
    assert set(first[0][0].unique().tolist()) == {0.0, 2.0}  # scaled by 1 / (1 - p)
    calls.clear()
    deq(x)
    assert not torch.equal(calls[0][0], first[0][0])  # redrawn on the next forward


def test_dropout_is_off_in_eval():
    drop = VariationalDropout2d(0.5).eval()
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(drop(x), x)


def test_weight_norm_is_computed_once_per_forward_whatever_the_iterations():
    cell = _cell()
    convs = cell.wn_convs()
    assert len(convs) == 3 * 2  # two block convs and one post-fusion 1x1 per branch
    for iters in (3, 12):
        before = [c.computations for c in convs]
        deq = DEQ(
            cell, "anderson", "ift", f_max_iter=iters, b_max_iter=iters, f_tol=1e-30, b_tol=1e-30
        )
        out = deq(torch.randn(2, 3, 8, 8))
        sum(t.sum() for t in out).backward()
        assert deq.stats.forward.nfe == iters
        assert [c.computations - b for c, b in zip(convs, before, strict=True)] == [1] * 6
        assert all(c.weight_v.grad is not None and c.weight_g.grad is not None for c in convs)


def test_ift_gradient_matches_unrolled_reference_in_float64():
    torch.manual_seed(0)
    cell = _cell(channels=(8, 8), image_size=6).double().train()
    # GroupNorm makes the cell scale-invariant in z, so at init it is not contractive. Small
    # output gains with O(1) biases fix |z| and shrink the Jacobian: a contractive cell.
    with torch.no_grad():
        for post in cell.post:
            post[-1].weight.mul_(1e-3)
            post[-1].bias.normal_(0, 1)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    weight = [
        torch.randn(2, 8, 6, 6, dtype=torch.float64),
        torch.randn(2, 8, 3, 3, dtype=torch.float64),
    ]

    def loss_of(z):
        return sum((w * t).sum() for w, t in zip(weight, z, strict=True))

    params = [p for p in cell.parameters() if p.requires_grad]
    deq = DEQ(
        cell,
        "anderson",
        "ift",
        f_max_iter=80,
        b_max_iter=200,
        f_tol=1e-12,
        b_tol=1e-12,
        stop_mode="abs",
        b_solver="fixed-point",
    )
    implicit = torch.autograd.grad(loss_of(deq(x)), params)
    cell.reset()
    inj = cell.inject(x)
    z = cell.init_state(inj)
    for _ in range(80):
        z = cell(z, inj)
    reference = torch.autograd.grad(loss_of(z), params)
    for a, b in zip(implicit, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert sum(g.abs().sum() for g in implicit) > 0


class _Tanh(Cell):
    """The issue's new-user cell, optionally returning a bare tensor."""

    def __init__(self, bare_forward=False, bare_init=False, bad_inject=False):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.bare_forward, self.bare_init, self.bad_inject = bare_forward, bare_init, bad_inject

    def inject(self, x):
        return x[:1] if self.bad_inject else x

    def init_state(self, injection):
        z = torch.zeros(injection.shape[0], 4)
        return z if self.bare_init else (z,)

    def forward(self, z, injection):
        out = torch.tanh(self.lin(z[0]) + injection)
        return out if self.bare_forward else (out,)


@pytest.mark.parametrize("batch", [4, 3])  # B = D once silently solved a transposed problem
@pytest.mark.parametrize(
    ("flag", "method"),
    [("bare_forward", "forward"), ("bare_init", "init_state"), ("bad_inject", "inject")],
)
def test_bind_refuses_results_outside_the_tuple_contract(batch, flag, method):
    deq = DEQ(_Tanh(**{flag: True}), "anderson", "ift")
    with pytest.raises(CellContractError, match=rf"cell _Tanh: {method} must return"):
        deq(torch.randn(batch, 4))


def test_bind_accepts_the_tuple_cell():
    deq = DEQ(_Tanh(), "anderson", "ift", f_tol=1e-6, f_max_iter=50).eval()
    x = torch.randn(4, 4)
    (z,) = deq(x)
    torch.testing.assert_close(z, torch.tanh(deq.cell.lin(z) + x), atol=1e-4, rtol=0)
