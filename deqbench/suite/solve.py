"""Solve suites (``[suite] kind = "solve"``, the default): their schema, validation and
expansion of the matrix into runs.

Validation happens before anything runs. Every error names the file, the key path and what was
expected, as one line (`deqbench.suite.load.load_suite` reads the file and applies ``--set``
overrides first, so they are validated exactly like the file).
"""

# pydantic copies the tables' mutable defaults per instance; ruff cannot see that `_Table`
# (from another module) is a pydantic model.
# ruff: noqa: RUF012

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError

from deqbench.errors import ConfigError, did_you_mean
from deqbench.plugins import Registry, get_registry
from deqbench.suite.duration import Duration
from deqbench.suite.validation import (
    Sweep,
    _as_list,
    _product,
    _Table,
    check_inverse_pairing,
    check_options,
    describe_validation,
    lookup,
)

PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_as_list)]
PositiveFloats = Annotated[list[Annotated[float, Field(gt=0)]], BeforeValidator(_as_list)]
Names = Annotated[list[str], BeforeValidator(_as_list)]


class SuiteInfo(_Table):
    """The ``[suite]`` table."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    kind: Literal["solve"] = "solve"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    repeats: Annotated[int, Field(ge=1)] = 5
    warmup: Annotated[int, Field(ge=0)] = 1
    threads: Annotated[int, Field(ge=1)] | None = None  # torch CPU threads; None: torch's own
    #: each run in a worker process of its own (a solver that segfaults is a ``crashed`` row,
    #: and the suite goes on); each problem's exact gradient is still computed once, by its
    #: first gradient run, and handed to the later ones. false: every run in this process
    isolate: bool = True
    timeout: Duration | None = None  #: a run's wall-time limit (with ``isolate``), e.g. "10m"


class Problem(_Table):
    """One ``[[problems]]`` entry: a registered cell at fixed weights and an input batch."""

    name: Annotated[str, Field(min_length=1)]
    cell: str
    batch_size: Annotated[int, Field(ge=1)]
    input_shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    options: dict[str, Any] = {}


class Matrix(_Table):
    """The ``[matrix]`` table; every list is swept, and runs are the cartesian product."""

    solver: Annotated[Names, Field(min_length=1)]
    max_iter: Annotated[PositiveInts, Field(min_length=1)] = [50]
    tol: Annotated[PositiveFloats, Field(min_length=1)] = [1e-4]
    stop_mode: Annotated[
        list[Literal["abs", "rel"]], BeforeValidator(_as_list), Field(min_length=1)
    ] = ["rel"]
    gradient: Names = []


class SuiteFile(_Table):
    """A whole suite file."""

    suite: SuiteInfo
    problems: Annotated[list[Problem], Field(min_length=1)]
    matrix: Matrix
    solver_options: dict[str, dict[str, Sweep]] = {}
    gradient_options: dict[str, dict[str, Sweep]] = {}


@dataclass(frozen=True)
class Run:
    """One point of a suite's matrix."""

    index: int
    problem: Problem
    solver: str
    solver_options: dict[str, Any]
    max_iter: int
    tol: float
    stop_mode: str
    gradient: str | None = None
    gradient_options: dict[str, Any] = field(default_factory=dict)
    smoke_max_iter: int | None = None  #: a smoke run's cap (``--limit``), when below max_iter

    @property
    def iter_cap(self) -> int:
        """The cap this run solves with: the smoke cap when there is one, else max_iter."""
        return self.smoke_max_iter or self.max_iter

    @property
    def label(self) -> str:
        def opts(d: Mapping[str, Any]) -> str:
            return "(" + ",".join(f"{k}={v}" for k, v in d.items()) + ")" if d else ""

        parts = [self.problem.name, self.solver + opts(self.solver_options)]
        cap = f"{self.max_iter}" + (f"(smoke {self.smoke_max_iter})" if self.smoke_max_iter else "")
        parts.append(f"{self.stop_mode}<{self.tol:g}@{cap}")
        if self.gradient:
            parts.append(self.gradient + opts(self.gradient_options))
        return " / ".join(parts)


@dataclass(frozen=True)
class Suite:
    """A validated suite: where it came from, its settings and its runs."""

    path: Path
    spec: SuiteFile
    runs: Sequence[Run]  #: a `RunGrid` (built on demand) or, after `select`, a tuple
    warnings: tuple[str, ...] = ()  #: things the user may not mean, e.g. a huge matrix
    kind: str = "solve"  #: its ``[suite] kind`` (`deqbench.suite.train.TrainSuite`'s is "train")
    smoke: int | None = None  #: a smoke run's ``--limit`` (one unwarmed repeat); None: a full run

    @property
    def name(self) -> str:
        return self.spec.suite.name


# -- loading --------------------------------------------------------------------------------------
def load_solve_suite(path: Path, data: dict[str, Any], registry: Registry | None = None) -> Suite:
    """Validate a parsed solve-suite file (overrides already applied) and expand its matrix."""
    try:
        spec = SuiteFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation(exc, SuiteFile)}") from None
    registry = registry or get_registry()
    _check_plugins(spec, registry, path)
    runs = RunGrid(spec)
    warnings = ()
    if len(runs) > WARN_RUNS:
        warnings = (
            f"{path}: the matrix expands to {len(runs):,} runs (more than {WARN_RUNS:,}); "
            "is a sweep longer than meant? --only and --set narrow it",
        )
    return Suite(path, spec, runs, warnings)


def _check_plugins(spec: SuiteFile, registry: Registry, path: Path) -> None:
    """Names exist; options exist and take their values (each factory is built once)."""

    def fail(key: str, err: Exception | str) -> None:
        raise ConfigError(f"{path}: {key}: {err}")

    built: dict[str, list[tuple[str, Any]]] = {}  # (name, built object) per kind
    names = [p.name for p in spec.problems]
    for i, problem in enumerate(spec.problems):
        if names.count(problem.name) > 1:
            fail(f"problems[{i}].name", f"duplicate problem name {problem.name!r}")
        factory = lookup(registry, "cells", problem.cell, f"problems[{i}].cell", fail)
        check_options(factory, problem.options, f"problems[{i}].options", fail, build=True)
    for kind, sweep, table in (
        ("solvers", spec.matrix.solver, ("matrix.solver", "solver_options")),
        ("gradients", spec.matrix.gradient, ("matrix.gradient", "gradient_options")),
    ):
        options = getattr(spec, table[1])
        factories = [
            lookup(registry, kind, n, f"{table[0]}[{j}]", fail) for j, n in enumerate(sweep)
        ]
        for name in options:  # options of a registered name left out of the sweep just wait
            if name not in sweep and name not in registry.names(kind):
                fail(f"{table[1]}.{name}", f"not in {table[0]}{did_you_mean(name, sweep)}")
        built[kind] = []
        for name, factory in zip(sweep, factories, strict=True):
            for combo in _product(options.get(name, {})):
                built[kind].append(
                    (name, check_options(factory, combo, f"{table[1]}.{name}", fail, build=True))
                )
    # Every solver meets every estimator: shine's needs every swept solver to offer its inverse.
    check_inverse_pairing(registry, built["solvers"], built["gradients"], "matrix.gradient", fail)


#: A matrix of more runs than this is accepted with a warning: few people mean that many.
WARN_RUNS = 10_000


class RunGrid(Sequence[Run]):
    """The cartesian product of problems × solvers (× options) × the matrix's sweeps, in that
    order, as a sequence whose runs are built when asked for: memory follows the sweeps' lengths,
    not the number of runs, so a large matrix costs only the runs that are used."""

    def __init__(self, spec: SuiteFile, smoke_max_iter: int | None = None) -> None:
        m = spec.matrix
        backward = [
            (g, opts) for g in m.gradient for opts in _product(spec.gradient_options.get(g, {}))
        ] or [(None, {})]
        self._heads = [
            (problem, solver, opts)
            for problem in spec.problems
            for solver in m.solver
            for opts in _product(spec.solver_options.get(solver, {}))
        ]
        self._axes = (m.max_iter, m.tol, m.stop_mode, backward)
        self._inner = len(m.max_iter) * len(m.tol) * len(m.stop_mode) * len(backward)
        self.smoke_max_iter = smoke_max_iter

    def __len__(self) -> int:
        return len(self._heads) * self._inner

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"run index {index} out of range for {len(self)} runs")
        head, rest = divmod(index, self._inner)
        picks = []
        for axis in reversed(self._axes):  # the last axis varies fastest
            rest, i = divmod(rest, len(axis))
            picks.append(axis[i])
        (grad, gopts), stop_mode, tol, max_iter = picks
        problem, solver, opts = self._heads[head]
        cap = self.smoke_max_iter
        cap = cap if cap is not None and cap < max_iter else None
        return Run(index, problem, solver, opts, max_iter, tol, stop_mode, grad, gopts, cap)

    def limited(self, limit: int) -> RunGrid:
        """The same grid with every run's iteration cap at most ``limit``."""
        grid = copy.copy(self)
        grid.smoke_max_iter = limit
        return grid


def expand(spec: SuiteFile) -> list[Run]:
    """Every run of the matrix, as a list (`RunGrid` builds them one at a time instead)."""
    return list(RunGrid(spec))


def smoke(suite: Suite, limit: int) -> Suite:
    """The same suite as a smoke run: every iteration cap at most ``limit``, one timed repeat.

    Each run keeps its declared ``max_iter`` (its identity in a report) and solves with the
    cap in `Run.smoke_max_iter`."""
    info = suite.spec.suite.model_copy(update={"repeats": 1, "warmup": 0})
    if isinstance(suite.runs, RunGrid):
        runs: Sequence[Run] = suite.runs.limited(limit)
    else:
        runs = tuple(
            dataclasses.replace(run, smoke_max_iter=limit if limit < run.max_iter else None)
            for run in suite.runs
        )
    spec = suite.spec.model_copy(update={"suite": info})
    return Suite(suite.path, spec, runs, suite.warnings, smoke=limit)


def select(suite: Suite, problems: Iterable[str]) -> Suite:
    """Only the runs of the named problems (``--only``); unknown names are errors."""
    names = {p.name for p in suite.spec.problems}
    wanted = list(problems)
    for name in wanted:
        if name not in names:
            raise ConfigError(
                f"{suite.path}: --only {name}: no such problem{did_you_mean(name, names)}"
            )
    runs = tuple(run for run in suite.runs if run.problem.name in wanted)
    return Suite(suite.path, suite.spec, runs, suite.warnings, smoke=suite.smoke)
