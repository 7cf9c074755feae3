"""The DEQ layer: a cell, a forward root solver and a gradient estimator, with statistics.

Per forward the layer calls ``cell.reset()`` once, ``cell.inject(x)`` once and
``cell.init_state(injection)``, solves ``z = f(z)`` on the packed flat view without building
a graph, then lets the gradient estimator attach the backward. The solver's buffers and
iterates never enter the autograd graph, so training memory does not grow with its steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deqbench.cell import Cell
from deqbench.errors import DeqbenchError
from deqbench.gradients.base import GradContext, GradientEstimator, check_pairing
from deqbench.gradients.regularization import PROBES, jacobian_penalty
from deqbench.plugins import get_gradient, get_solver
from deqbench.settings import layer_defaults
from deqbench.solvers.base import STOP_MODES, Fn, Solver
from deqbench.solvers.trajectory import IterateRecorder, Trajectory
from deqbench.state import State, StateSpec, pack, unpack
from deqbench.stats import DEQStats


@dataclass(eq=False)
class BoundCell:
    """A cell bound to one input: ``f`` on flat ``(B, D)`` states and where to start."""

    f: Fn  #: differentiable in the cell's parameters and the injection
    z0: Tensor  #: (B, D) the detached initial state
    spec: StateSpec
    injection: Any


class CellContractError(DeqbenchError, TypeError):
    """A cell's ``init_state`` or ``forward`` did not return a state tuple of tensors."""


def _check_state(cell: Cell, method: str, value: Any, spec: StateSpec | None = None) -> None:
    """One clear error naming the cell when ``value`` is not a ``(B, ...)`` tensor tuple
    (a bare tensor would be packed row by row: a transposed problem, silently "converged")."""
    name = type(cell).__name__
    if not isinstance(value, tuple) or not value or not all(isinstance(t, Tensor) for t in value):
        got = f"a bare {type(value).__name__}" if not isinstance(value, tuple) else "a tuple"
        if isinstance(value, Tensor):
            got += f" of shape {tuple(value.shape)}"
        raise CellContractError(
            f"cell {name}: {method} must return a non-empty tuple of tensors, one (B, ...) "
            f"tensor per resolution (e.g. `return (z,)`), got {got}"
        )
    if spec is not None and StateSpec.of(value) != spec:
        raise CellContractError(
            f"cell {name}: {method} must return the state's shapes {list(spec.shapes)} "
            f"(per sample), got {list(StateSpec.of(value).shapes)}"
        )


def _check_injection(cell: Cell, injection: Any, batch: int) -> None:
    """The injection's tensors (a tensor or a tuple/list of them) must be ``(B, ...)``."""
    parts = injection if isinstance(injection, (tuple, list)) else (injection,)
    for t in parts:
        if isinstance(t, Tensor) and (t.dim() == 0 or t.shape[0] != batch):
            raise CellContractError(
                f"cell {type(cell).__name__}: inject must return (B, ...) tensors with "
                f"B = {batch} (one row per sample), got shape {tuple(t.shape)}"
            )


def bind(cell: Cell, x: Tensor) -> BoundCell:
    """``reset()``, ``inject(x)`` and ``init_state`` once, and ``f`` over the packed state.

    ``init_state``'s and ``forward``'s results are checked against the tuple contract (the
    first application of ``f``; later ones only by shape, cheaply, inside `unpack`/`pack`).
    """
    cell.reset()
    injection = cell.inject(x)
    _check_injection(cell, injection, x.shape[0])
    state = cell.init_state(injection)
    _check_state(cell, "init_state", state)
    spec = StateSpec.of(state)
    checked = False

    def f(z: Tensor) -> Tensor:
        nonlocal checked
        out = cell(unpack(z, spec), injection)
        if not checked:
            _check_state(cell, "forward", out, spec)
            checked = True
        return pack(out)

    return BoundCell(f, pack(state).detach(), spec, injection)


def _resolve(kind: str, value: Any, options: dict[str, Any] | None, base: type) -> Any:
    if isinstance(value, str):
        getter = get_gradient if kind == "gradient" else get_solver
        return getter(value, **(options or {}))
    if options:
        raise ValueError(f"{kind}_options apply only when {kind} is given by name")
    if not isinstance(value, base):
        raise TypeError(f"{kind} must be a registered name or a {base.__name__}, got {value!r}")
    return value


#: Where a solve starts instead of ``init_state``'s: ``init(z0, bound) -> (B, D)`` (`DEQ.init`).
Init = Callable[[Tensor, BoundCell], Tensor]


def _start(init: Init, bound: BoundCell) -> Tensor:
    z0 = init(bound.z0, bound)
    if not isinstance(z0, Tensor) or z0.shape != bound.z0.shape:
        got = tuple(z0.shape) if isinstance(z0, Tensor) else type(z0).__name__
        raise ValueError(f"DEQ.init must return a {tuple(bound.z0.shape)} start, got {got}")
    return z0.detach().to(bound.z0.dtype)


#: The keywords' defaults, from the settings' one declaration (`deqbench.settings.DEQSpec`).
_D = layer_defaults()


class DEQ(nn.Module):
    """A deep equilibrium layer: ``forward(x)`` returns the equilibrium state tuple.

    Its keywords but ``keep_graph_in_eval`` are the fields of `deqbench.DEQSettings`, with a
    bare layer's defaults (`deqbench.settings.layer_defaults`).

    - ``solver`` / ``gradient``: registered names (built with ``*_options``) or instances.
    - ``f_*`` / ``b_*``: iteration cap, tolerance and stop mode of the forward solve and of
      the backward solve of estimators that solve one (ift), whose own options override them;
      ``b_solver`` (a name built with ``b_solver_options``, or a `Solver`) may be affine-only;
      ``b_stop_mode`` None: as the forward's.
    - ``jac_reg_weight`` > 0 computes a Hutchinson Jacobian penalty on a ``jac_reg_freq``
      fraction of training forwards (deterministically spaced), with ``jac_reg_samples``
      probes from ``jac_reg_probe``; add `jac_reg_loss` to the training loss.
    - In eval mode, or with gradients disabled, the output is the detached ``z*``;
      ``keep_graph_in_eval`` attaches the estimator in eval mode too (input gradients).

    ``stats`` describes the last forward (and its backward once that runs).
    """

    def __init__(
        self,
        cell: Cell,
        solver: str | Solver = _D["solver"],
        gradient: str | GradientEstimator = _D["gradient"],
        *,
        f_max_iter: int = _D["f_max_iter"],
        f_tol: float = _D["f_tol"],
        b_max_iter: int = _D["b_max_iter"],
        b_tol: float = _D["b_tol"],
        stop_mode: str = _D["stop_mode"],
        b_stop_mode: str | None = _D["b_stop_mode"],
        b_solver: str | Solver = _D["b_solver"],
        solver_options: dict[str, Any] | None = _D["solver_options"],
        gradient_options: dict[str, Any] | None = _D["gradient_options"],
        b_solver_options: dict[str, Any] | None = _D["b_solver_options"],
        jac_reg_weight: float = _D["jac_reg_weight"],
        jac_reg_freq: float = _D["jac_reg_freq"],
        jac_reg_samples: int = _D["jac_reg_samples"],
        jac_reg_probe: str = _D["jac_reg_probe"],
        keep_graph_in_eval: bool = False,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.solver: Solver = _resolve("solver", solver, solver_options, Solver)
        if getattr(self.solver, "affine_only", False):
            raise ValueError(
                f"{type(self.solver).__name__} solves only affine maps; a cell is not one "
                "(use it as the ift backward solver instead)"
            )
        self.b_solver: Solver = _resolve("b_solver", b_solver, b_solver_options, Solver)
        self.gradient: GradientEstimator = _resolve(
            "gradient", gradient, gradient_options, GradientEstimator
        )
        check_pairing(self.solver, self.gradient)  # shine needs a solver's inverse estimate
        if f_max_iter < 1 or b_max_iter < 1:
            raise ValueError("f_max_iter and b_max_iter must be >= 1")
        b_stop_mode = stop_mode if b_stop_mode is None else b_stop_mode
        for mode in (stop_mode, b_stop_mode):
            if mode not in STOP_MODES:
                raise ValueError(f"stop modes must be 'abs' or 'rel', got {mode!r}")
        if jac_reg_weight < 0 or not 0 <= jac_reg_freq <= 1 or jac_reg_samples < 1:
            raise ValueError(
                "jac_reg_weight must be >= 0, jac_reg_freq in [0, 1] and jac_reg_samples >= 1"
            )
        if jac_reg_probe not in PROBES:
            raise ValueError(f"jac_reg_probe must be one of {', '.join(PROBES)}")
        self.f_max_iter, self.f_tol, self.stop_mode = f_max_iter, f_tol, stop_mode
        self.b_max_iter, self.b_tol, self.b_stop_mode = b_max_iter, b_tol, b_stop_mode
        self.jac_reg_weight, self.jac_reg_freq = jac_reg_weight, jac_reg_freq
        self.jac_reg_samples, self.jac_reg_probe = jac_reg_samples, jac_reg_probe
        self.keep_graph_in_eval = keep_graph_in_eval
        self.stats = DEQStats()
        self._jac_credit = 0.0  # accumulates jac_reg_freq; a penalty is due at each whole unit
        self.overriding = False  #: inside `overridden`: a side computation, not a model step
        #: k > 0: training forwards sample k points of the solve into `trajectory` (the
        #: fixed-point correction, `deqbench.solvers.trajectory`); 0: none, at no cost
        self.keep_iterates = 0
        self.trajectory: Trajectory | None = None
        #: None: each solve starts at the cell's ``init_state``. Else ``init(z0, bound)`` maps that
        #: default (B, D) start (and the `BoundCell`) to the start to use instead, e.g. another
        #: input's equilibrium (`deqbench.measure.path_independence`); set it with `overridden`.
        self.init: Init | None = None

    def forward(self, x: Tensor) -> State:
        attach = torch.is_grad_enabled() and (self.training or self.keep_graph_in_eval)
        with torch.set_grad_enabled(attach):  # a detached answer needs no injection graph
            bound = bind(self.cell, x)
        if self.init is not None:  # another start than init_state's (overridden(init=...))
            bound.z0 = _start(self.init, bound)
        stats = self.stats = DEQStats()
        f, recorder = bound.f, None
        if self.keep_iterates and attach and self.training and not self.overriding:
            f = recorder = IterateRecorder(bound.f, self.keep_iterates, self.f_max_iter)
        ctx = GradContext(
            z0=bound.z0,
            f_max_iter=self.f_max_iter,
            f_tol=self.f_tol,
            f_stop_mode=self.stop_mode,
            b_max_iter=self.b_max_iter,
            b_tol=self.b_tol,
            b_stop_mode=self.b_stop_mode,
            b_solver=self.b_solver,
            stats=stats,
        )
        if attach and self.gradient.unrolls_forward:
            out = self.gradient(f, None, ctx)
            z_star = out.detach()
        else:
            # Only an estimator that reuses it makes the solver keep its inverse estimate (an
            # evaluation solver that offers none is fine: no estimator runs then).
            keep = {}
            if attach and self.gradient.needs_inverse:
                check_pairing(self.solver, self.gradient)
                keep = {"keep_inverse": True}
            result = self.solver(
                f,
                bound.z0,
                max_iter=self.f_max_iter,
                tol=self.f_tol,
                stop_mode=self.stop_mode,
                **keep,
            )
            stats.record_forward(result)
            z_star = result.z
            ctx.inverse = result.inverse
            out = self.gradient(bound.f, z_star, ctx) if attach else z_star
        if attach and self.training and self._jac_reg_due():
            stats.jac_loss = jacobian_penalty(
                bound.f, z_star, n_samples=self.jac_reg_samples, dist=self.jac_reg_probe
            )
        self.trajectory = recorder.trajectory(bound.spec) if recorder is not None else None
        return unpack(out, bound.spec)

    @contextlib.contextmanager
    def overridden(self, **settings: Any) -> Iterator[DEQ]:
        """Inside the block, solve and differentiate with other ``settings`` (the constructor's
        names: ``solver``, ``gradient`` and ``b_solver`` as names or instances, with their
        ``*_options``; the caps, tolerances and stop modes; ``init``, where solves start, see
        the attribute) and compute no Jacobian penalty.
        Afterwards the layer is as before, ``stats`` and the penalty's schedule included.
        Training runs check their gradients against exact ones with it."""
        resolved = {"solver": Solver, "gradient": GradientEstimator, "b_solver": Solver}
        plain = ("f_max_iter", "f_tol", "b_max_iter", "b_tol", "stop_mode", "b_stop_mode", "init")
        known = {*resolved, *plain, *(f"{name}_options" for name in resolved)}
        if unknown := sorted(set(settings) - known):
            raise TypeError(f"DEQ.overridden: unknown settings {', '.join(unknown)}")
        for mode in ("stop_mode", "b_stop_mode"):
            if mode in settings and settings[mode] not in STOP_MODES:
                raise ValueError(f"stop modes must be 'abs' or 'rel', got {settings[mode]!r}")
        saved = {name: getattr(self, name) for name in (*resolved, *plain)}
        saved.update(stats=self.stats, jac_reg_weight=self.jac_reg_weight)
        saved.update(_jac_credit=self._jac_credit, overriding=self.overriding)
        try:
            for name, base in resolved.items():
                if name in settings:
                    options = settings.get(f"{name}_options")
                    setattr(self, name, _resolve(name, settings[name], options, base))
            for name in plain:
                if name in settings:
                    setattr(self, name, settings[name])
            self.jac_reg_weight, self.overriding = 0.0, True
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def _jac_reg_due(self) -> bool:
        if self.jac_reg_weight == 0:
            return False
        self._jac_credit += self.jac_reg_freq
        if self._jac_credit >= 1 - 1e-9:  # tolerate float drift in e.g. 3 × (1/3)
            self._jac_credit -= 1
            return True
        return False

    def jac_reg_loss(self) -> Tensor | float:
        """``jac_reg_weight × stats.jac_loss`` of the last forward, 0.0 when none was computed."""
        if self.stats.jac_loss is None:
            return 0.0
        return self.jac_reg_weight * self.stats.jac_loss

    def extra_repr(self) -> str:
        return (
            f"solver={type(self.solver).__name__}, gradient={type(self.gradient).__name__}, "
            f"f_max_iter={self.f_max_iter}, f_tol={self.f_tol:g}, b_max_iter={self.b_max_iter}, "
            f"b_solver={type(self.b_solver).__name__}, b_tol={self.b_tol:g}, "
            f"stop_mode={self.stop_mode!r}"
        )
