"""The DEQ layer: call protocol, modes, statistics, options and the Jacobian-penalty schedule."""

from __future__ import annotations

import pytest
import torch

from deqbench.deq import DEQ, bind
from deqbench.errors import UnknownNameError
from deqbench.gradients import JFB, GradientEstimator
from deqbench.plugins import get_registry
from deqbench.solvers import GMRES, FixedPoint, Status
from deqbench.state import pack
from deqbench.testing import ToyCell

ESTIMATORS = get_registry().names("gradients")


def _x(batch: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, generator=gen, dtype=torch.float64)


class _CountingSolver(FixedPoint):
    calls = 0

    def solve(self, f, z0, monitor):
        type(self).calls += 1
        super().solve(f, z0, monitor)


def test_forward_returns_the_equilibrium_of_a_two_tensor_state():
    cell = ToyCell()
    deq = DEQ(cell, f_max_iter=100, f_tol=1e-12)
    out = deq(_x())
    assert [tuple(t.shape) for t in out] == [(3, 4), (3, 2, 3)]
    assert all(t.dtype == torch.float64 for t in out)
    bound = bind(cell, _x())
    with torch.no_grad():
        residual = (bound.f(pack(out)) - pack(out)).norm(dim=1)
    assert residual.max() < 1e-10
    stats = deq.stats
    assert stats.forward is not None and stats.forward.status is Status.CONVERGED
    assert stats.forward.rel_residual <= 1e-12 and 1 < stats.forward.nfe < 100


def test_train_mode_attaches_the_gradient_and_records_backward_statistics():
    deq = DEQ(ToyCell(), f_tol=1e-10, f_max_iter=100, b_tol=1e-10, b_max_iter=100)
    out = deq(_x())
    assert all(t.requires_grad for t in out)
    assert deq.stats.backward is None  # nothing has run backward yet
    sum(t.sum() for t in out).backward()
    assert deq.stats.backward is not None and deq.stats.backward.status is Status.CONVERGED
    assert deq.stats.backward.nfe > 1
    row = deq.stats.as_dict()
    assert row["f_status"] == "converged" and row["b_status"] == "converged"
    assert {"f_nfe", "f_nstep", "b_abs_residual", "b_rel_residual", "b_message"} <= row.keys()


def test_eval_mode_returns_detached_state_unless_asked_to_keep_the_graph():
    cell = ToyCell()
    x = _x().requires_grad_()
    deq = DEQ(cell, f_max_iter=100, f_tol=1e-12, b_tol=1e-12, b_max_iter=100).eval()
    assert not any(t.requires_grad for t in deq(x))
    deq.keep_graph_in_eval = True
    (grad_eval,) = torch.autograd.grad(pack(deq(x)).sum(), x)
    deq.train()
    (grad_train,) = torch.autograd.grad(pack(deq(x)).sum(), x)
    torch.testing.assert_close(grad_eval, grad_train, rtol=1e-9, atol=1e-12)


def test_no_grad_in_train_mode_solves_without_the_estimator():
    calls = []

    class Spy(JFB):
        def __call__(self, f, z_star, ctx):
            calls.append(1)
            return super().__call__(f, z_star, ctx)

    deq = DEQ(ToyCell(), gradient=Spy())
    with torch.no_grad():
        out = deq(_x())
    assert not calls and not out[0].requires_grad
    deq(_x())
    assert calls == [1]


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_reset_and_inject_run_once_per_forward(name, mode, monkeypatch):
    cell = ToyCell(dropout=0.2)
    counts = {"reset": 0, "inject": 0}
    for method in counts:
        original = getattr(cell, method)

        def counted(*args, _m=method, _o=original):
            counts[_m] += 1
            return _o(*args)

        monkeypatch.setattr(cell, method, counted)
    solver = "broyden" if name in ("shine", "refine") else "fixed-point"  # they reuse its H
    deq = DEQ(cell, solver, gradient=name, f_max_iter=7).train(mode == "train")
    out = deq(_x())
    assert counts == {"reset": 1, "inject": 1}
    if mode == "train":
        pack(out).sum().backward()  # the backward must not reset or inject again
        assert counts == {"reset": 1, "inject": 1}


def test_forward_non_convergence_is_reported_not_raised():
    deq = DEQ(ToyCell(), f_max_iter=2, f_tol=1e-12)
    deq(_x())
    fwd = deq.stats.forward
    assert fwd.status is Status.MAX_ITER and fwd.nfe == 2 and fwd.nstep == 1
    assert "0/3 samples reached rel tol" in fwd.message


def test_unrolled_replaces_the_forward_solve_in_training_only():
    _CountingSolver.calls = 0
    deq = DEQ(ToyCell(), _CountingSolver(), "unrolled", f_max_iter=6)
    deq(_x())
    assert _CountingSolver.calls == 0 and deq.stats.forward.nfe == 6
    deq.eval()
    deq(_x())
    assert _CountingSolver.calls == 1


def test_each_forward_gets_its_own_statistics():
    deq = DEQ(ToyCell(), f_max_iter=50, f_tol=1e-8)
    first = deq(_x(seed=1))
    stats_first = deq.stats
    second = deq(_x(seed=2))
    assert deq.stats is not stats_first
    (pack(first).sum() + pack(second).sum()).backward()
    assert stats_first.backward is not None and deq.stats.backward is not None


def test_options_are_validated():
    with pytest.raises(ValueError, match="affine"):
        DEQ(ToyCell(), GMRES())
    with pytest.raises(ValueError, match="solver_options"):
        DEQ(ToyCell(), FixedPoint(), solver_options={"beta": 0.5})
    with pytest.raises(UnknownNameError, match="did you mean"):
        DEQ(ToyCell(), "fixed-pint")
    with pytest.raises(TypeError):
        DEQ(ToyCell(), gradient=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stop modes"):
        DEQ(ToyCell(), stop_mode="max")
    deq = DEQ(ToyCell(), "fixed-point", "phantom", solver_options={"beta": 0.5},
              gradient_options={"k": 2})  # fmt: skip
    assert deq.solver.beta == 0.5 and deq.gradient.k == 2
    assert isinstance(deq.gradient, GradientEstimator)


def test_jacobian_penalty_follows_weight_frequency_and_mode():
    deq = DEQ(ToyCell(), jac_reg_weight=0.5, jac_reg_freq=0.5)
    due = []
    for _ in range(4):
        deq(_x())
        due.append(deq.stats.jac_loss is not None)
    assert due == [False, True, False, True]
    loss = deq.jac_reg_loss()
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    torch.testing.assert_close(loss, 0.5 * deq.stats.jac_loss)
    deq.eval()
    for _ in range(2):
        deq(_x())
        assert deq.stats.jac_loss is None and deq.jac_reg_loss() == 0.0
    off = DEQ(ToyCell())
    off(_x())
    assert off.stats.jac_loss is None and "jac_loss" not in off.stats.as_dict()
