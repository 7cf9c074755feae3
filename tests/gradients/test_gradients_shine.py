"""SHINE and refine: exact on a linear cell where Broyden's estimate is exact, refusal without
a solver that offers an estimate (layer and suites), refine reaching ift as its cap grows, and
the estimate counted in the backward's memory."""

from __future__ import annotations

import itertools

import pytest
import torch

from deqbench.cell import Cell
from deqbench.deq import DEQ
from deqbench.errors import ConfigError
from deqbench.gradients import IFT, JFB, SHINE, Refine
from deqbench.measure.memory import SavedTensorsMeter
from deqbench.state import pack
from deqbench.suite.load import load_suite
from deqbench.testing import ToyCell


class LinearCell(Cell):
    """``z ↦ a ⊙ z + w x`` (elementwise ``a``): ``(I − J)⁻ᵀ c = c / (1 − a)`` exactly."""

    def __init__(self, a: list[float]) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.ones(len(a), dtype=torch.float64))

    def inject(self, x):
        return self.w * x

    def init_state(self, injection):
        return (torch.zeros_like(injection),)

    def forward(self, z, injection):
        return (self.a * z[0] + injection,)


def _input_gradient(deq: DEQ, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad((c * pack(deq(x))).sum(), x)
    return grad


def test_shine_is_exact_where_the_secant_estimate_is():
    # One state per sample: one secant update makes Broyden's H the exact 1 / (a − 1), so
    # SHINE's backward is the exact implicit gradient w c / (1 − a).
    cell = LinearCell([0.9])
    x = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    c = torch.tensor([[1.0], [-3.0], [0.5]], dtype=torch.float64)
    deq = DEQ(cell, "broyden", "shine", f_max_iter=3, f_tol=1e-300)
    exact = c / (1 - 0.9)
    torch.testing.assert_close(_input_gradient(deq, x, c), exact, rtol=8 * 2**-52, atol=0)
    assert deq.stats.forward.nfe == 3 and deq.stats.backward is None  # nothing solved


def test_shine_applies_the_estimate_of_a_partial_solve():
    # Before the estimate fits the map, SHINE is the estimate's adjoint, not the implicit one:
    # after one update of a D = 2 diagonal map, H fits a single secant direction only.
    cell = LinearCell([0.5, -0.5])
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    c = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    shine = _input_gradient(DEQ(cell, "broyden", "shine", f_max_iter=3, f_tol=1e-300), x, c)
    ift = _input_gradient(
        DEQ(cell, "broyden", "ift", f_max_iter=60, b_max_iter=200, b_tol=1e-14), x, c
    )
    torch.testing.assert_close(ift, c / (1 - cell.a.detach()), rtol=1e-12, atol=0)
    assert (shine - ift).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("gradient", "options"), [("shine", {}), ("refine", {}), ("refine", {"start": "shine"})]
)
def test_estimators_that_reuse_the_estimate_refuse_a_solver_without_one(gradient, options):
    with pytest.raises(ValueError, match="offers none; expected a solver that offers one"):
        DEQ(ToyCell(), "anderson", gradient, gradient_options=options)


def test_refine_from_jfb_needs_no_estimate():
    DEQ(ToyCell(), "anderson", "refine", gradient_options={"start": "jfb"})
    with pytest.raises(ValueError, match="start must be one of shine, jfb"):
        Refine(start="ift")


def test_an_evaluation_solver_without_an_estimate_is_fine_until_a_backward_needs_one():
    deq = DEQ(ToyCell(), "broyden", "shine")
    x = torch.randn(2, 5, dtype=torch.float64)
    with deq.overridden(solver="anderson"):
        with torch.no_grad():
            deq(x)  # evaluation: no estimator runs
        with pytest.raises(ValueError, match="Anderson offers none"):
            deq(x)
    deq(x)  # the layer's own solver again


def _gradients(deq: DEQ, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    loss = (c * pack(deq(x))).sum()
    grads = torch.autograd.grad(loss, list(deq.cell.parameters()))
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("start", ["shine", "jfb"])
def test_refine_reaches_ift_as_its_cap_grows(start):
    cell = ToyCell(rho=0.8)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    c = torch.randn(4, 10, generator=gen, dtype=torch.float64)
    settings = {"f_max_iter": 100, "f_tol": 1e-13, "solver_options": {"m": 100}}
    exact = _gradients(DEQ(cell, "broyden", IFT(tol=1e-14, max_iter=400), **settings), x, c)
    errors = []
    for cap in (1, 2, 4, 8, 16, 32, 128):
        got = _gradients(
            DEQ(cell, "broyden", Refine(start=start, max_iter=cap, tol=1e-14), **settings), x, c
        )
        errors.append(float((got - exact).norm() / exact.norm()))
    origin = _gradients(
        DEQ(cell, "broyden", SHINE() if start == "shine" else JFB(), **settings), x, c
    )
    errors.insert(0, float((origin - exact).norm() / exact.norm()))  # cap 1 is the start itself
    assert errors[1] == pytest.approx(errors[0], rel=1e-9)
    assert all(later < earlier for earlier, later in itertools.pairwise(errors[1:]))
    assert errors[-1] < 1e-12


def test_the_estimate_counts_in_the_backward_memory():
    cell, x = ToyCell(), torch.randn(3, 5, dtype=torch.float64)
    saved, nfe = {}, {}
    for name in ("jfb", "shine"):
        deq = DEQ(cell, "broyden", name, f_max_iter=10, f_tol=1e-300)
        with SavedTensorsMeter(ignore=cell.parameters()) as meter:
            deq(x)
        saved[name], nfe[name] = meter.bytes, deq.stats.forward.nfe
    pairs = nfe["shine"] - 2  # one per step after the first; m = 8 = 10 - 2: no restart
    assert nfe["jfb"] == nfe["shine"] and pairs >= 1
    assert saved["shine"] - saved["jfb"] == 2 * pairs * 3 * 10 * 8  # u and v, (B, n, D) float64


SOLVE_SUITE = """
[suite]
name = "s"
kind = "solve"
[[problems]]
name = "toy"
cell = "conv"
batch_size = 2
input_shape = [4, 8, 8]
options = {{ channels = 4, height = 8, width = 8 }}
[matrix]
solver = {solvers}
gradient = ["ift", "shine"]
"""


def test_a_solve_suite_pairing_shine_with_anderson_is_refused_in_one_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SOLVE_SUITE.format(solvers='["broyden", "anderson"]'))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: matrix.gradient: ")
    assert "solver 'anderson' offers none; expected a solver that offers one (broyden)" in message
    path.write_text(SOLVE_SUITE.format(solvers='["broyden"]'))
    assert len(load_suite(path).runs) == 2


def test_a_training_suite_pairing_shine_with_anderson_is_refused(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        '[suite]\nname = "t"\nkind = "train"\n[dataset]\nname = "digits"\n'
        '[model]\nname = "mdeq-cpu-small"\n[deq]\nsolver = "anderson"\ngradient = "shine"\n'
        '[recipe]\nsteps = 2\n[matrix]\n"deq.solver" = ["broyden", "anderson"]\n'
    )
    with pytest.raises(ConfigError, match=r"deq.gradient: gradient 'shine' reuses.*anderson"):
        load_suite(path)
