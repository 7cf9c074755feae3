"""Training suites (``[suite] kind = "train"``): their schema, validation and expansion into runs.

A training suite declares one base run (dataset, model, DEQ settings, recipe, evaluation) and
varies it by dotted keys: ``[matrix]`` sweeps a cartesian product, each ``[[include]]`` adds one
run beside it. Every run is validated as a whole file would be, and every registered name and
option is checked, before anything trains. Errors are one `ConfigError` line naming the file,
the key and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deqbench.errors import ConfigError, DeqbenchError, did_you_mean
from deqbench.plugins import Registry, get_registry
from deqbench.suite.loggers import check_loggers, logging_warnings
from deqbench.suite.train_tables import (
    REFERENCE_METRICS,
    TARGETS,
    TrainFile,
)
from deqbench.suite.validation import (
    check_inverse_pairing,
    check_options,
    describe_validation,
    lookup,
)


@dataclass(frozen=True)
class TrainRun:
    """One training run: the file as it applies to this run, and what defines it."""

    index: int
    spec: TrainFile  #: matrix/include values applied; ``matrix``/``include`` emptied
    options: dict[str, Any]  #: the swept or included dotted keys and values (not reference.*)
    seed: int
    max_steps: int | None = None  #: the smoke cap (``--max-steps``); None: the recipe's length

    @property
    def label(self) -> str:
        parts = [self.spec.model.name]
        parts += [f"{k.split('.')[-1]}={v}" for k, v in self.options.items() if k != "model.name"]
        if self.seed != self.spec.suite.seed:
            parts.append(f"seed={self.seed}")
        return " ".join(parts)


@dataclass(frozen=True)
class TrainSuite:
    """A validated training suite and its runs."""

    path: Path
    spec: TrainFile
    runs: tuple[TrainRun, ...]
    kind: str = "train"
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.suite.name


# -- loading --------------------------------------------------------------------------------------
def load_train_suite(
    path: Path, data: dict[str, Any], registry: Registry | None = None
) -> TrainSuite:
    """Validate a parsed training-suite file (overrides already applied) and expand it."""
    try:
        spec = TrainFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation(exc, TrainFile)}") from None
    for key in spec.matrix:
        _check_dotted(key, f"matrix.{key}", path, spec.matrix[key])
    for i, entry in enumerate(spec.include):
        if not entry:
            raise ConfigError(f"{path}: include[{i}]: empty; give dotted keys, e.g. model.name")
        for key in entry:
            _check_dotted(key, f"include[{i}].{key}", path, entry[key])
    base = {k: v for k, v in data.items() if k not in ("matrix", "include")}
    configs: list[tuple[str, dict[str, Any]]] = []
    keys = list(spec.matrix)
    for values in itertools.product(*spec.matrix.values()):
        configs.append(("matrix", dict(zip(keys, values, strict=True))))
    configs += [(f"include[{i}]", dict(entry)) for i, entry in enumerate(spec.include)]
    registry = registry or get_registry()
    runs: list[TrainRun] = []
    checked: set[str] = set()
    for where, options in configs:
        run_data = copy.deepcopy(base)
        for key, value in options.items():
            _set_dotted(run_data, key, value)
        try:
            run_spec = TrainFile.model_validate(run_data)
        except ValidationError as exc:
            msg = describe_validation(exc, TrainFile)
            raise ConfigError(f"{path}: {msg} (in the run of {where} {_json(options)})") from None
        signature = run_spec.model_dump_json()
        if signature not in checked:
            checked.add(signature)
            _check_plugins(run_spec, registry, path, f"{where} {_json(options)}" if options else "")
        # A published figure does not define the run: kept out of its options and label.
        defining = {k: v for k, v in options.items() if not k.startswith("reference.")}
        for r in range(spec.suite.repeats):
            runs.append(TrainRun(len(runs), run_spec, defining, spec.suite.seed + r))
    _check_figures(runs, path)
    warnings = _untrained(runs) + logging_warnings(path, [run.spec.logging for run in runs])
    return TrainSuite(path, spec, tuple(runs), warnings=warnings)


def _check_figures(runs: list[TrainRun], path: Path) -> None:
    """A ``[reference]`` band or source without any run's figure is a forgotten figure."""
    tables = [run.spec.reference for run in runs]
    stated = any(t.band is not None or t.source is not None for t in tables)
    if stated and not any(t.figure() is not None for t in tables):
        raise ConfigError(
            f"{path}: reference: a band or source, but no run states a published figure; "
            "expected reference.top1, reference.top5 or reference.miou in [reference], "
            "[matrix] or an [[include]]"
        )


def _check_weights(spec: TrainFile, model: Any, fail: Any) -> None:
    """``[model] weights`` is a file, and ``weights_format`` one the model reads (its factory's
    ``weight_formats``, `deqbench.models.Model.weight_formats`)."""
    table = spec.model
    if not table.weights:
        if table.weights_format != "auto":
            fail("model.weights_format", "a format of weights, but no model.weights")
        return
    if not Path(table.weights).is_file():
        fail("model.weights", f"no such file {table.weights!r}; expected a weights file")
    formats = ("auto", "deqbench", *getattr(model, "weight_formats", ()))
    if table.weights_format not in formats:
        hint = did_you_mean(table.weights_format, formats)
        fail(
            "model.weights_format", f"model {table.name!r} reads no {table.weights_format!r}{hint}"
        )


def _untrained(runs: list[TrainRun]) -> tuple[str, ...]:
    """A warning for runs that evaluate only (no training length) and have no weights."""
    idle = [run for run in runs if run.spec.recipe.evaluate_only and not run.spec.model.weights]
    if not idle:
        return ()
    return (
        f"{len(idle)} run(s) set neither recipe.epochs nor recipe.steps and no model.weights: "
        "they evaluate untrained weights (give model.weights, or: deqbench eval SUITE WEIGHTS)",
    )


def _json(options: Mapping[str, Any]) -> str:
    return json.dumps(options, sort_keys=False, default=str)


def _check_dotted(key: str, where: str, path: Path, value: Any = None) -> None:
    """A matrix/include key names a field of a table, or a key inside an options table."""
    parts = key.split(".")
    tables = {n: f for n, f in TrainFile.model_fields.items() if n not in ("matrix", "include")}
    if parts[0] not in tables:
        raise ConfigError(
            f"{path}: {where}: unknown table {parts[0]!r}{did_you_mean(parts[0], tables)}"
        )
    table = tables[parts[0]].annotation
    if len(parts) < 2:  # `--set matrix.deq.solver=…` unquoted: the dots made a table
        if isinstance(value, list) and len(value) == 1:  # a matrix value, wrapped as a sweep
            value = value[0]
        inner = next(iter(value), None) if isinstance(value, dict) else None
        example = f"{parts[0]}.{inner or next(iter(table.model_fields))}"
        cli = f"""; with --set, quote it: --set 'matrix."{example}"=[...]'"""
        raise ConfigError(
            f'{path}: {where}: expected one dotted key of a table, quoted, e.g. "{example}"'
            + (cli if where.startswith("matrix") else "")
        )
    fields = table.model_fields
    if parts[1] not in fields:
        hint = did_you_mean(parts[1], fields)
        raise ConfigError(f"{path}: {where}: unknown key {parts[0]}.{parts[1]}{hint}")
    is_dict = getattr(fields[parts[1]].annotation, "__origin__", None) is dict
    if len(parts) > 2 and not is_dict:
        raise ConfigError(f"{path}: {where}: {parts[0]}.{parts[1]} is not a table of options")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)


def _check_plugins(spec: TrainFile, registry: Registry, path: Path, where: str) -> None:
    """Registered names exist, and options are ones their factories take."""

    def fail(key: str, err: Exception | str) -> None:
        suffix = f" (in the run of {where})" if where else ""
        raise ConfigError(f"{path}: {key}: {err}{suffix}")

    def find(kind: str, name: str, key: str) -> Any:
        return lookup(registry, kind, name, key, fail)

    dataset = find("datasets", spec.dataset.name, "dataset.name")
    check_options(dataset, spec.dataset.options, "dataset.options", fail)
    model = find("models", spec.model.name, "model.name")
    check_options(model, spec.model.options, "model.options", fail)
    _check_weights(spec, model, fail)
    # The model's task is its head's when the suite names one, else the model's own.
    key, kind, name = "model.name", "model", spec.model.name
    task = declared_task(model, spec.model.options)
    if spec.model.head:
        head = find("heads", spec.model.head, "model.head")
        check_options(head, spec.model.head_options, "model.head_options", fail)
        key, kind, name = "model.head", "head", spec.model.head
        task = declared_task(head, spec.model.head_options)
    data_task = declared_task(dataset, spec.dataset.options)
    if task and data_task and task != data_task:  # known up front: refuse before any run
        heads = [n for n in registry.names("heads") if _head_task(registry, n) == data_task]
        hint = f'model.head = "{heads[0]}"' if heads else ""
        fix = f"a {data_task} {kind}" + (f" ({'or ' * (kind == 'model')}{hint})" if hint else "")
        fail(
            key,
            f"{kind} {name!r} is for {task}, but dataset {spec.dataset.name!r} is a "
            f"{data_task} dataset; expected {fix}",
        )
    target, known = spec.eval.target(), data_task or task
    what = f"dataset {spec.dataset.name!r}" if data_task else f"{kind} {name!r}"
    if target is not None and known and TARGETS[target[0]][1] != known:
        other = next(k for k, (_, t) in TARGETS.items() if t == known)
        need = TARGETS[target[0]][1]
        fail(
            f"eval.{target[0]}",
            f"a {need} target, but {what} is for {known}; expected eval.{other}",
        )
    figure = spec.reference.figure()
    if figure is not None and known and REFERENCE_METRICS[figure[0]][1] != known:
        fits = [f"reference.{k}" for k, (_, t) in REFERENCE_METRICS.items() if t == known]
        need = REFERENCE_METRICS[figure[0]][1]
        fail(
            f"reference.{figure[0]}",
            f"a {need} metric, but {what} is for {known}; expected {' or '.join(fits)}",
        )
    deq = spec.deq
    built = {}
    for kind, name, options, key in (
        ("solvers", deq.solver, deq.solver_options, "deq.solver"),
        ("gradients", deq.gradient, deq.gradient_options, "deq.gradient"),
        ("solvers", deq.b_solver, deq.b_solver_options, "deq.b_solver"),
    ):
        factory = find(kind, name, key)
        options_key = key.replace("solver", "solver_options")
        built[key] = [(name, check_options(factory, options, options_key, fail, build=True))]
    check_inverse_pairing(
        registry, built["deq.solver"], built["deq.gradient"], "deq.gradient", fail
    )
    if spec.eval.solver:
        factory = find("solvers", spec.eval.solver, "eval.solver")
        check_options(factory, spec.eval.solver_options, "eval.solver_options", fail, build=True)
    elif spec.eval.solver_options:
        fail("eval.solver_options", "options of an evaluation solver: give eval.solver too")
    check_loggers(spec.logging, registry, fail)


def declared_task(factory: Any, options: Mapping[str, Any]) -> str | None:
    """The task ("classification" or "segmentation") that a registered model, head or dataset
    factory declares for ``options``, before anything is built; None when it declares none
    (then only the run finds a mismatch, `deqbench.runs.train.run.train_run`).

    A factory with a ``task`` option declares it by that option (the synthetic dataset). Else
    its ``task`` attribute does: a string, or a function of the options (a model whose
    ``variant`` option picks its head). `Model`'s default ``task`` is no declaration: a model
    class may take its task from the head it is given.
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "task" in params:
        default = params["task"].default
        task = options.get("task", None if default is inspect.Parameter.empty else default)
        return task if isinstance(task, str) else None
    owner = next((c for c in getattr(factory, "__mro__", ()) if "task" in vars(c)), None)
    if owner is not None and owner.__module__ == "deqbench.models":
        return None
    task = getattr(factory, "task", None)
    if callable(task):
        try:
            task = task(dict(options))
        except Exception:  # a bad option: its own check (or the run) says so, not this one
            return None
    return task if isinstance(task, str) else None


def _head_task(registry: Registry, name: str) -> str | None:
    try:
        return declared_task(registry.get("heads", name).obj, {})
    except DeqbenchError:  # a head that does not import: no suggestion from it
        return None


# -- smoke runs -----------------------------------------------------------------------------------
def smoke_train(
    suite: TrainSuite, max_steps: int | None = None, max_eval_batches: int | None = None
) -> TrainSuite:
    """The same suite as a smoke run: at most ``max_steps`` training steps and
    ``max_eval_batches`` eval batches per run. The unrolled warm-up is capped at half the steps,
    so a smoke run still switches to equilibrium mode."""
    runs = []
    for run in suite.runs:
        spec = run.spec
        if max_eval_batches:
            current = spec.eval.max_batches
            capped = min(current, max_eval_batches) if current else max_eval_batches
            spec = spec.model_copy(
                update={"eval": spec.eval.model_copy(update={"max_batches": capped})}
            )
        if max_steps:
            warmup = min(spec.recipe.unrolled_warmup_steps, max_steps // 2)
            recipe = spec.recipe.model_copy(update={"unrolled_warmup_steps": warmup})
            spec = spec.model_copy(update={"recipe": recipe})
        runs.append(dataclasses.replace(run, spec=spec, max_steps=max_steps or run.max_steps))
    return dataclasses.replace(suite, runs=tuple(runs))
