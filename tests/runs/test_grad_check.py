"""Gradient checks of training runs: against a hand-computed exact implicit gradient, exact when
the run's settings are the exact ones, and invisible to the run they check (bitwise)."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from deqbench import plugins
from deqbench.cell import Cell
from deqbench.gradients.reference import EXACT_SETTINGS
from deqbench.models import DEQSettings, Model
from deqbench.runs.train.grad_check import check_gradient, due
from deqbench.runs.train.run import train_run
from deqbench.state import State
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys

CPU = torch.device("cpu")


def test_due_steps_are_every_nth_and_the_last():
    assert [s for s in range(10) if due(s, 10, 4)] == [3, 7, 9]
    assert [s for s in range(10) if due(s, 10, 0)] == [9]
    assert [s for s in range(3) if due(s, 3, 5)] == [2]


class LinearCell(Cell):
    """``z ↦ W z + U x``: its equilibrium and exact implicit gradient have closed forms."""

    def __init__(self, w: Tensor, u: Tensor) -> None:
        super().__init__()
        self.w, self.u = nn.Parameter(w), nn.Parameter(u)

    def inject(self, x: Tensor) -> Tensor:
        return x @ self.u.T

    def init_state(self, injection: Tensor) -> State:
        return (torch.zeros_like(injection),)

    def forward(self, z: State, injection: Tensor) -> State:
        return (z[0] @ self.w.T + injection,)


class LinearDEQ(Model):
    def __init__(self, cell: LinearCell, settings: DEQSettings) -> None:
        super().__init__()
        self.deq = settings.build(cell)

    def forward(self, x: Tensor) -> Tensor:
        return self.deq(x)[0]  # the equilibrium itself is the logits


def test_jfb_check_equals_the_hand_computed_agreement_on_a_linear_deq():
    torch.manual_seed(0)
    n, d, b = 5, 3, 4
    w = torch.randn(n, n, dtype=torch.float64)
    w *= 0.6 / torch.linalg.matrix_norm(w, ord=2)  # a contraction
    u = torch.randn(n, d, dtype=torch.float64)
    x, y = torch.randn(b, d, dtype=torch.float64), torch.tensor([0, 1, 2, 4])
    settings = DEQSettings(solver="anderson", f_max_iter=200, f_tol=1e-13, gradient="jfb")
    model = LinearDEQ(LinearCell(w.clone(), u.clone()), settings).train()

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits, target)

    check = check_gradient(model, x, y, loss_fn, autocast=contextlib.nullcontext)
    # By hand: z* = (I − W)⁻¹ U x per sample; g = ∂L/∂z*. JFB backpropagates through one
    # application of f at z*: ∂W = g z*ᵀ, ∂U = g xᵀ. The exact implicit gradient first solves
    # (I − W)ᵀ v = g: ∂W = v z*ᵀ, ∂U = v xᵀ.
    eye = torch.eye(n, dtype=torch.float64)
    z = torch.linalg.solve(eye - w, (x @ u.T).T).T.requires_grad_()
    (g,) = torch.autograd.grad(loss_fn(z, y), z)
    v = torch.linalg.solve((eye - w).T, g.T).T
    jfb = torch.cat([(g.T @ z.detach()).flatten(), (g.T @ x).flatten()])
    exact = torch.cat([(v.T @ z.detach()).flatten(), (v.T @ x).flatten()])
    cosine = float(jfb @ exact / (jfb.norm() * exact.norm()))
    rel = float((jfb - exact).norm() / exact.norm())
    assert cosine < 0.999  # far enough from exact to tell a wrong reference apart
    # The exact side is a solve to EXACT_SETTINGS' tolerances (1e-6 forward, 1e-7 backward)
    assert check.cosine == pytest.approx(cosine, abs=1e-6)
    assert check.rel_error == pytest.approx(rel, rel=1e-5)
    assert check.exact_f_residual <= EXACT_SETTINGS["f_tol"]
    assert check.exact_b_residual is not None and check.exact_b_residual <= 1e-7
    assert model.deq.stats.forward is None  # the layer's own stats are as they were


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


def _suite(tmp_path: Path, body: str = "", name: str = "suite", **eval_keys: object) -> Path:
    path = tmp_path / f"{name}.toml"
    keys = "".join(f"{k} = {str(v).lower()}\n" for k, v in eval_keys.items())
    path.write_text(
        textwrap.dedent(
            """
            [suite]
            name = "checks"
            kind = "train"
            device = "cpu"
            [dataset]
            name = "blobs"
            image_size = 8
            batch_size = 6
            [model]
            name = "mdeq-cpu-small"
            options = { dropout = 0.3 }
            [recipe]
            lr = 0.01
            steps = 4
            [eval]
            max_batches = 1
            """
        )
        + keys
        + textwrap.dedent(body)
    )
    return path


def test_a_run_whose_settings_are_the_exact_ones_checks_to_zero_error(toys, tmp_path):
    """Both gradients see the same dropout masks and BatchNorm state: bitwise the same."""
    x = EXACT_SETTINGS
    body = f"""
    [deq]
    solver = "{x["solver"]}"
    f_max_iter = {x["f_max_iter"]}
    f_tol = {x["f_tol"]}
    b_solver = "{x["b_solver"]}"
    b_max_iter = {x["b_max_iter"]}
    b_tol = {x["b_tol"]}
    """
    m = train_run(load_suite(_suite(tmp_path, body)).runs[0], CPU).metrics
    assert m["status"] == "completed" and m["grad_checks"] == 1
    assert m["grad_rel_error_worst"] == 0.0
    assert m["grad_cosine_worst"] == pytest.approx(1.0, abs=1e-12)


def test_checks_do_not_change_the_run_they_check(toys, tmp_path):
    a = train_run(load_suite(_suite(tmp_path, name="a", grad_check_every=2)).runs[0], CPU)
    b = train_run(load_suite(_suite(tmp_path, name="b", grad_check=False)).runs[0], CPU)
    assert [r["loss"] for r in a.steps] == [r["loss"] for r in b.steps]  # bitwise
    for key in ("eval_loss", "eval_top1", "train_loss_final", "f_rel_residual_final"):
        assert a.metrics[key] == b.metrics[key], key
    checked_steps = [r["step"] for r in a.steps if r.get("grad_cosine") is not None]
    assert checked_steps == [1, 3]
    assert a.metrics["grad_checks"] == 2 and "grad_checks" not in b.metrics
    assert all(r.get("grad_cosine") is None for r in b.steps)
    assert -1 <= a.metrics["grad_cosine_worst"] <= a.metrics["grad_cosine_median"] <= 1
    assert a.metrics["grad_check_s"] > 0


def test_warmup_steps_and_explicit_models_are_not_checked(toys, tmp_path):
    body = """
    [[include]]
    "model.name" = "tiny-mlp"
    "model.options" = {}
    """
    path = _suite(tmp_path, body, grad_check_every=1)
    path.write_text(
        path.read_text().replace("steps = 4\n", "steps = 4\nunrolled_warmup_steps = 4\n")
    )
    warm, explicit = (train_run(run, CPU) for run in load_suite(path).runs)
    assert warm.metrics["unrolled_steps"] == 4 and "grad_checks" not in warm.metrics
    assert "grad_checks" not in explicit.metrics
