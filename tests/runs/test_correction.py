"""The fixed-point correction loss (`deqbench.runs.train.correction`): its value and gradient
against a hand computation on a linear DEQ, the recipe's validation and refusals, and a tiny
training run with it."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from deqbench import plugins
from deqbench.cell import Cell
from deqbench.data import DatasetInfo
from deqbench.deq import DEQ
from deqbench.errors import ConfigError
from deqbench.hookspecs import hookimpl
from deqbench.models import DEQSettings, Model
from deqbench.runs.train.correction import correction_loss, enable_correction
from deqbench.runs.train.metrics import task_loss
from deqbench.runs.train.run import train_run
from deqbench.runs.train.settings import LoopSettings
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys, tiny_deq

DT = torch.float64
CPU = torch.device("cpu")


class LinearCell(Cell):
    """f(z) = A z + B x, row-wise: z Aᵀ + x Bᵀ."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(a.clone()), nn.Parameter(b.clone())

    def inject(self, x: Tensor) -> Tensor:
        return x @ self.b.T

    def init_state(self, injection: Tensor) -> tuple[Tensor]:
        return (torch.zeros_like(injection),)

    def forward(self, z, injection):
        return (z[0] @ self.a.T + injection,)


class LinearDEQ(Model):
    """The linear cell's equilibrium, then logits z Cᵀ."""

    def __init__(self, a: Tensor, b: Tensor, c: Tensor, gradient: str, cap: int) -> None:
        super().__init__()
        cell = LinearCell(a, b)
        self.deq = DEQ(
            cell, "fixed-point", gradient, f_max_iter=cap, f_tol=1e-30, stop_mode="abs",
            b_max_iter=500, b_tol=1e-15,
        )  # fmt: skip
        self.c = nn.Parameter(c.clone())

    def head_logits(self, state, x: Tensor) -> Tensor:
        return state[0] @ self.c.T

    def forward(self, x: Tensor) -> Tensor:
        return self.head_logits(self.deq(x), x)


def hand(a, b, c, x, y, gamma, gradient):
    """The loss and its gradients in A, B and C, in closed form: cap 6, k = 3 keeps the points of
    evaluations 2, 4 and 6 (z_1, z_3, z_5, with z_n = Σ_{i<n} Aⁱ B x); f of them is z_2, z_4 and
    the main term's z_6 (f of the solver's best iterate z_5)."""
    u = x @ b.T
    zs = [torch.zeros_like(u)]
    for _ in range(6):
        zs.append(zs[-1] @ a.T + u)
    onehot = torch.nn.functional.one_hot(y, c.shape[0]).to(DT)
    n = x.shape[0]
    loss = 0.0
    ga, gb, gc = torch.zeros_like(a), torch.zeros_like(b), torch.zeros_like(c)
    for weight, z_in, main in ((1.0, zs[5], True), (gamma**2, zs[1], False), (gamma, zs[3], False)):
        z_out = z_in @ a.T + u
        logits = z_out @ c.T
        loss = loss + weight * (torch.logsumexp(logits, 1) - (logits * onehot).sum(1)).mean()
        dlogits = weight * (torch.softmax(logits, 1) - onehot) / n
        gc += dlogits.T @ z_out
        g = dlogits @ c  # dL/dz_out
        if main and gradient == "ift":  # the implicit gradient: v = g (I − A)⁻¹, row-wise
            g = torch.linalg.solve((torch.eye(a.shape[0], dtype=DT) - a).T, g.T).T
        ga += g.T @ z_in
        gb += g.T @ x
    return loss, ga, gb, gc


@pytest.mark.parametrize("gradient", ["jfb", "ift"])
def test_loss_and_gradient_match_the_closed_form_on_a_linear_deq(gradient):
    gen = torch.Generator().manual_seed(0)
    d, p, classes, n, gamma = 4, 3, 3, 5, 0.8
    a = torch.randn(d, d, generator=gen, dtype=DT)
    a *= 0.6 / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(d, p, generator=gen, dtype=DT)
    c = torch.randn(classes, d, generator=gen, dtype=DT)
    x = torch.randn(n, p, generator=gen, dtype=DT)
    y = torch.tensor([0, 1, 2, 1, 0])
    model = LinearDEQ(a, b, c, gradient, cap=6).train()
    enable_correction(model, 3)
    settings = _settings(gamma)
    info = DatasetInfo(task="classification", num_classes=classes, in_channels=1)
    logits = model(x)
    assert model.deq.trajectory.evaluations == (2, 4, 6)
    extra = correction_loss(model, x, y, settings=settings, info=info)
    assert model.deq.trajectory is None  # taken, so its graph goes with the step
    loss = task_loss(logits, y) + extra
    loss.backward()
    want, ga, gb, gc = hand(a, b, c, x, y, gamma, gradient)
    torch.testing.assert_close(loss.detach(), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.c.grad, gc, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.deq.cell.b.grad, gb, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.deq.cell.a.grad, ga, rtol=0, atol=1e-12)


def _settings(gamma: float) -> SimpleNamespace:
    """The loop settings the correction reads: its decay and the recipe's loss."""
    settings = SimpleNamespace(fpc_gamma=gamma, label_smoothing=0.0)
    settings.loss = functools.partial(LoopSettings.loss, settings)
    return settings


def test_off_records_nothing_and_adds_nothing():
    model = tiny_deq(num_classes=3, in_channels=1, image_size=4).train()
    enable_correction(model, 0)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    model(x)
    assert model.deq.keep_iterates == 0 and model.deq.trajectory is None
    settings = _settings(0.8)
    info = DatasetInfo(task="classification", num_classes=3, in_channels=1)
    assert correction_loss(model, x, y, settings=settings, info=info) == 0.0
    enable_correction(model, 1)  # one sample is the final iterate alone: the plain loss
    assert model.deq.keep_iterates == 0


class NoHead(Model):
    def __init__(self) -> None:
        super().__init__()
        self.deq = DEQSettings().build(LinearCell(torch.zeros(2, 2), torch.zeros(2, 2)))


def test_models_that_cannot_take_the_loss_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"NoHead does not implement Model\.head_logits"):
        enable_correction(NoHead(), 3)
    with pytest.raises(NotImplementedError, match=r"override Model\.head_logits"):
        NoHead().head_logits((torch.zeros(1, 2),), torch.zeros(1, 2))
    model = tiny_deq(num_classes=3, deq=DEQSettings(f_max_iter=2))
    with pytest.raises(ConfigError, match="3 samples of a solve capped at f_max_iter = 2"):
        enable_correction(model, 3)


def test_mdeq_head_logits_is_what_follows_its_deq_layer():
    from deqbench_plugins.mdeq.variants import build_mdeq

    x = torch.randn(2, 1, 16, 16)
    deq = DEQSettings(f_max_iter=2, b_max_iter=2)
    for head in (None, "segmentation"):
        model = build_mdeq(
            "cpu-small", num_classes=3, in_channels=1, image_size=16, head=head, deq=deq
        ).eval()
        with torch.no_grad():
            torch.testing.assert_close(model.head_logits(model.deq(x), x), model(x))


# -- the recipe option, end to end -----------------------------------------------------------
BUILT: list = []


def recorded(**kwargs):
    BUILT.append(tiny_deq(**kwargs))
    return BUILT[-1]


class Recorded:
    @hookimpl
    def register_models(self, register):
        register("recorded-deq", recorded)


@pytest.fixture
def toys():
    BUILT.clear()
    yield plugins.reset_registry(("train-toys", TrainToys()), ("recorded", Recorded()))
    plugins.reset_registry()


def suite(tmp_path: Path, recipe: str = "", model: str = "recorded-deq") -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [suite]
            name = "fpc"
            kind = "train"
            device = "cpu"
            [dataset]
            name = "blobs"
            batch_size = 8
            [model]
            name = "{model}"
            [deq]
            f_tol = 1e-30  # every solve runs to its cap, as DEQ-Flow's do
            [recipe]
            lr = 0.05
            steps = 6
            """
        )
        + recipe
        + "\n[eval]\nmax_batches = 1\n"
    )
    return path


def test_a_tiny_run_with_the_correction_trains_and_its_losses_differ(toys, tmp_path):
    plain = train_run(load_suite(suite(tmp_path)).runs[0], CPU)
    fpc = load_suite(suite(tmp_path, "fpc_k = 3\nfpc_gamma = 0.5"))
    assert fpc.runs[0].spec.recipe.fpc_k == 3
    out = train_run(fpc.runs[0], CPU)
    assert plain.metrics["status"] == out.metrics["status"] == "completed"
    assert BUILT[-1].deq.keep_iterates == 3 and BUILT[0].deq.keep_iterates == 0
    losses = [r["loss"] for r in out.steps]
    base = [r["loss"] for r in plain.steps]
    assert len(losses) == len(base) == 6
    assert losses[0] > base[0]  # the same first forward, plus positive correction terms
    assert all(a != b for a, b in zip(losses, base, strict=True))
    assert 0 <= out.metrics["eval_top1"] <= 100


def test_the_recipe_option_is_validated_and_explicit_models_refuse_it(toys, tmp_path):
    for bad, key in (("fpc_k = -1", "fpc_k"), ("fpc_gamma = 0", "fpc_gamma"),
                     ("fpc_gamma = 1.5", "fpc_gamma")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"recipe\.{key}"):
            load_suite(suite(tmp_path, bad))
    explicit = load_suite(suite(tmp_path, "fpc_k = 3", model="tiny-mlp")).runs[0]
    with pytest.raises(ConfigError, match="TinyMLP is an explicit model"):
        train_run(explicit, CPU)
