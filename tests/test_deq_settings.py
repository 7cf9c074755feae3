"""The DEQ settings are declared once (`DEQSettings`): the suite's ``[deq]`` table, `DEQ`'s
keywords and `GradContext`'s defaults list the same settings with the same defaults."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import torch

import deqbench
import deqbench.models
from deqbench.deq import DEQ
from deqbench.gradients.base import GradContext
from deqbench.gradients.regularization import PROBES
from deqbench.models import DEQSettings
from deqbench.settings import DEQSpec, layer_defaults
from deqbench.suite.train_tables import DEQTable
from deqbench.testing import ToyCell

NAMES = [f.name for f in dataclasses.fields(DEQSettings)]
#: A model's defaults: the declaration's own.
DEFAULTS = dataclasses.asdict(DEQSettings())
#: Where a bare layer defaults otherwise: its solver, its caps (a model's variant has its own)
#: and no options (None for {}).
LAYER_ONLY = {
    "solver": "fixed-point",
    "f_max_iter": 30,
    "b_max_iter": 30,
    "solver_options": None,
    "gradient_options": None,
    "b_solver_options": None,
}


def test_the_suite_deq_table_is_the_settings():
    fields = DEQTable.model_fields
    assert list(fields) == NAMES
    assert {n: f.get_default(call_default_factory=True) for n, f in fields.items()} == DEFAULTS
    assert DEQSettings(**DEQTable().model_dump()) == DEQSettings()
    hints = typing.get_type_hints(DEQSpec, include_extras=True)
    probe = typing.get_args(hints["jac_reg_probe"])
    assert set(probe) == set(PROBES)  # the table refuses what the layer would


def test_deq_keywords_are_the_settings_with_a_bare_layers_defaults():
    params = inspect.signature(DEQ).parameters
    assert set(params) - {"cell", "keep_graph_in_eval"} == set(NAMES)
    defaults = {name: params[name].default for name in NAMES}
    assert defaults == layer_defaults() == {**DEFAULTS, **LAYER_ONLY}


def test_grad_context_defaults_are_a_bare_layers():
    layer = layer_defaults()
    ctx = GradContext(z0=torch.zeros(1, 1))
    assert (ctx.f_max_iter, ctx.f_tol, ctx.f_stop_mode) == (
        layer["f_max_iter"], layer["f_tol"], layer["stop_mode"],
    )  # fmt: skip
    assert (ctx.b_max_iter, ctx.b_tol, ctx.b_stop_mode) == (
        layer["b_max_iter"], layer["b_tol"], layer["stop_mode"],
    )  # fmt: skip


def test_build_passes_every_setting_and_fills_none_caps():
    settings = DEQSettings(
        solver="broyden", f_tol=1e-5, b_stop_mode="abs", jac_reg_samples=3, b_max_iter=7
    )
    deq = settings.build(ToyCell(), f_max_iter=11, b_max_iter=13)
    assert type(deq.solver).__name__ == "Broyden"
    assert (deq.f_max_iter, deq.b_max_iter, deq.f_tol) == (11, 7, 1e-5)
    assert (deq.stop_mode, deq.b_stop_mode, deq.jac_reg_samples) == ("rel", "abs", 3)


def test_public_names():
    assert deqbench.DEQSettings is DEQSettings
    assert deqbench.models.DEQSettings is DEQSettings
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEQSettings().solver = "broyden"  # type: ignore[misc]
