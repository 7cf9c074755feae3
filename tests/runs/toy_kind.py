"""A toy kind of run, whole in this one module: what a plugin adds to deqbench to get suites,
reports, smoke runs, shards, resume and compare for a new kind of benchmark.

Each run iterates the scalar contraction x ← r·x + 1 from x = 0 until |x − x*| ≤ tol, where
x* = 1 / (1 − r), and reports how many steps that took: exactly ⌈log(tol / x*) / log r⌉.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import deqbench
from deqbench.errors import ConfigError
from deqbench.report.schema import Metric, RunStatus
from deqbench.runs.kind import Job, RunKind, RunOutput
from deqbench.suite.validation import describe_validation


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToyInfo(_Table):
    name: str
    kind: Literal["contraction"]
    device: Literal["cpu"] = "cpu"
    threads: int | None = None
    isolate: bool = True
    timeout: float | None = None


class ToyFile(_Table):
    suite: ToyInfo
    rates: list[float] = Field(min_length=1)
    tol: float = 1e-6


@dataclasses.dataclass(frozen=True)
class ToyRun:
    index: int
    rate: float
    tol: float
    max_steps: int | None = None

    @property
    def label(self) -> str:
        return f"r={self.rate}"


@dataclasses.dataclass(frozen=True)
class ToySuite:
    path: Path
    spec: ToyFile
    runs: tuple[ToyRun, ...]
    kind: str = "contraction"
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.suite.name


class Contraction(RunKind):
    name = "contraction"
    title = "contraction"
    columns = MappingProxyType(
        {
            "run": "index of the run",
            "suite": "suite name",
            "kind": "contraction",
            "rate": "the contraction rate r",
            "tol": "tolerance on |x − x*|",
            "max_steps": "smoke cap (--max-steps), when given",
            "device": "device",
            "status": "converged | max_iter | error …",
            "error": "why it failed",
            "steps": "iterations to reach tol",
            "wall_s": "wall time of the run, seconds",
        }
    )
    companions = MappingProxyType({"iterates.csv": {"run": "run index", "x": "iterate"}})
    keys = ("rate", "tol", "max_steps")
    metrics = (Metric("steps", "steps"),)
    signature = frozenset({"status", "rate"})
    ok = frozenset({RunStatus.CONVERGED})
    smoke_options = MappingProxyType({"--max-steps": "max_steps"})
    schema = ToyFile

    def load(self, path: Path, data: dict[str, Any], registry: Any) -> ToySuite:
        try:
            spec = ToyFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe_validation(exc, ToyFile)}") from None
        runs = tuple(ToyRun(i, r, spec.tol) for i, r in enumerate(spec.rates))
        return ToySuite(path, spec, runs)

    def smoke(self, suite: ToySuite, max_steps: int | None = None) -> ToySuite:
        runs = tuple(dataclasses.replace(run, max_steps=max_steps) for run in suite.runs)
        return dataclasses.replace(suite, runs=runs)

    def identity(self, suite: ToySuite, run: ToyRun, device: Any) -> dict[str, Any]:
        row = {"run": run.index, "suite": suite.name, "kind": self.name, "rate": run.rate}
        return row | {"tol": run.tol, "max_steps": run.max_steps, "device": str(device)}

    def execute(self, job: Job) -> RunOutput:
        run = job.run
        if run.rate >= 1:
            raise ValueError(f"rate {run.rate} does not contract")
        x, target, iterates = 0.0, 1 / (1 - run.rate), []
        while abs(x - target) > run.tol and len(iterates) < (run.max_steps or 10**6):
            x = run.rate * x + 1
            iterates.append({"run": run.index, "x": x})
        status = RunStatus.CONVERGED if abs(x - target) <= run.tol else RunStatus.MAX_ITER
        metrics = {"status": status, "steps": len(iterates)}
        return RunOutput(metrics, {"iterates.csv": iterates})


class ToyPlugin:
    """Registers the kind, as any plugin registers anything."""

    @deqbench.hookimpl
    def register_run_kinds(self, register):
        register("contraction", Contraction(), description="a scalar contraction, iterated")
