"""Reading and validating a suite TOML file, and expanding its matrix into runs.

Validation happens before anything runs. Every error names the file, the key path and what was
expected, as one line. ``--set key.path=value`` overrides are applied to the parsed file first, so
they are validated exactly like the file.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from deqbench.duration import Duration
from deqbench.errors import ConfigError, DeqbenchError, did_you_mean
from deqbench.plugins import Registry, get_registry

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _as_list(value: Any) -> Any:
    """A scalar in a matrix means a one-element sweep."""
    return value if isinstance(value, list) else [value]


Sweep = Annotated[list[Any], BeforeValidator(_as_list), Field(min_length=1)]
PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_as_list)]
PositiveFloats = Annotated[list[Annotated[float, Field(gt=0)]], BeforeValidator(_as_list)]
Names = Annotated[list[str], BeforeValidator(_as_list)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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

    @property
    def name(self) -> str:
        return self.spec.suite.name


# -- loading --------------------------------------------------------------------------------------
def load_suite(
    path: str | Path, overrides: Iterable[str] = (), registry: Registry | None = None
) -> Suite:
    """Read, override, validate and expand a suite; any problem raises one `ConfigError`.

    ``[suite] kind = "train"`` gives a `deqbench.train_suite.TrainSuite` instead."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such suite file")
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is accepted and dropped
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    for item in overrides:
        apply_override(data, item, path)
    info = data.get("suite")
    kind = info.get("kind", "solve") if isinstance(info, dict) else "solve"
    if kind == "train":
        from deqbench.train_suite import load_train_suite

        return load_train_suite(path, data, registry)
    if kind != "solve":
        hint = did_you_mean(str(kind), ("solve", "train"))
        raise ConfigError(f"{path}: suite.kind: unknown kind {kind!r}{hint}")
    try:
        spec = SuiteFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
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


def apply_override(data: dict[str, Any], item: str, path: Path) -> None:
    """Apply ``key.path=value`` (value parsed as TOML, else taken as a string) to ``data``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. matrix.max_iter=20")
    # A quoted part keeps its dots: matrix."deq.solver" is the training matrix's dotted key.
    parts = [q.strip('"') for q in re.findall(r'"[^"]*"|[^.]+', key.strip())]
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if raw.strip()[:1] in ("[", "{", '"', "'"):  # meant as TOML, not as a bare string
            raise ConfigError(
                f"{path}: --set {item!r}: the value did not parse as TOML ({exc}); "
                f"{_expected_value(data, key.strip(), parts, raw)}"
            ) from None
        value = raw
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"{path}: --set {key}: {where!r} needs an index below {len(node)}"
                )
            if last:
                node[int(part)] = value
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{path}: --set {key}: {where!r} is not a table or list")


def _expected_value(data: Mapping[str, Any], key: str, parts: Sequence[str], raw: str) -> str:
    """What a ``--set`` of ``key`` (split into ``parts``) should look like, its value ``raw``
    having failed to parse: the type the suite's schema gives the key and an example, e.g.
    "matrix.max_iter takes an array of integers ≥ 1, e.g. --set 'matrix.max_iter=[20]'"."""
    info = data.get("suite")
    train = isinstance(info, dict) and info.get("kind") == "train"
    if train:
        from deqbench.train_suite import TrainFile

        schema = TrainFile.model_json_schema()
    else:
        schema = SuiteFile.model_json_schema()
    path, sweep = list(parts), False
    if train and len(path) == 2 and path[0] in ("matrix", "include"):
        path, sweep = path[1].split("."), path[0] == "matrix"  # a sweep of a dotted key
    node: Any = schema
    for part in path:
        node = _deref(node, schema)
        extra = node.get("additionalProperties")
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(extra, dict):
            node = extra
        elif "items" in node and part.isdigit():
            node = node["items"]
        else:
            node = {}  # an option of a registered name: the schema does not know its type
            break
    if sweep:
        node = {"type": "array", "items": node}
    words, example = _in_words(node, schema), _example(node, schema, raw)
    if words:
        return f"{key} takes {words}" + (f", e.g. --set '{key}={example}'" if example else "")
    quoted = _quoted_words(raw)  # the type is unknown: at least quote its strings
    return "quote strings inside it" + (f", e.g. --set '{key}={quoted}'" if quoted else "")


def _quoted_words(raw: str) -> str:
    """The bare words of ``raw`` as a TOML array of strings ('[anderson' → '["anderson"]'),
    or "" when it has none."""
    words = re.findall(r"[A-Za-z_][\w.-]*", raw)
    return "[" + ", ".join(f'"{w}"' for w in words) + "]" if words else ""


def _deref(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A JSON-schema node with its ``$ref`` (to ``#/$defs/Name``) followed, and null dropped
    from an ``anyOf`` (TOML has no null)."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    options = [n for n in node.get("anyOf", ()) if n.get("type") != "null"]
    return _deref(options[0], schema) if len(options) == 1 else node


def _in_words(node: Mapping[str, Any], schema: Mapping[str, Any], many: bool = False) -> str:
    """A JSON-schema type in words ("an integer ≥ 1"; with ``many``, "integers ≥ 1"); "" when
    it says nothing (an untyped array item)."""
    node = _deref(node, schema)
    if "anyOf" in node:
        return " or ".join(filter(None, (_in_words(n, schema, many) for n in node["anyOf"])))
    if "enum" in node:
        return ("strings among " if many else "one of ") + ", ".join(f'"{v}"' for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        items = _in_words(node.get("items", {}), schema, many=True)
        return ("arrays" if many else "an array") + (f" of {items}" if items else "")
    if kind not in _WORDS:
        return ""
    if "format" in node:  # "a duration"
        return f"{node['format']}s" if many else f"a {node['format']}"
    bounds = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    return _WORDS[kind][many] + "".join(f" {s} {node[b]}" for b, s in bounds.items() if b in node)


#: A JSON-schema type in words: (one, many).
_WORDS = {
    "integer": ("an integer", "integers"),
    "number": ("a number", "numbers"),
    "string": ("a string", "strings"),
    "boolean": ("true or false", "booleans"),
    "object": ("a table", "tables"),
}


def _example(node: Mapping[str, Any], schema: Mapping[str, Any], raw: str) -> str:
    """An example TOML value of the type ``node``; strings are the bare words of ``raw``
    quoted, when it has some ('[anderson]' → '["anderson"]'). "" when there is none."""
    node = _deref(node, schema)
    if "anyOf" in node:
        return _example(node["anyOf"][0], schema, raw)
    if "enum" in node or "examples" in node:
        return json.dumps((node.get("enum") or node["examples"])[0])
    kind = node.get("type")
    if kind == "array":
        items = _deref(node.get("items", {}), schema)
        strings = items.get("type") in ("string", None) and "enum" not in items
        if strings and _quoted_words(raw):  # a string, or any value (an option's sweep)
            return _quoted_words(raw)
        item = _example(items, schema, raw)
        return f"[{item}]" if item else ""
    if kind == "integer":  # 20, or the nearest bound
        return str(min(max(20, node.get("minimum", 20)), node.get("maximum", 20)))
    return {"number": "0.001", "string": '"name"', "boolean": "true"}.get(kind, "")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def describe_validation(exc: ValidationError, root: type[BaseModel], limit: int = 8) -> str:
    """Every error of validating a file against ``root`` (any pydantic model class), on one
    line: 'key: what was expected, got what'. Unknown keys come first, each with its "did you
    mean", since a misspelt key is usually also the cause of a "missing required key"."""
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    parts = [_describe_one(err, root) for err in errors[:limit]]
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    if len(parts) == 1:
        return parts[0]
    return f"{len(errors)} problems: " + " ".join(f"({i}) {p}" for i, p in enumerate(parts, 1))


def _describe_one(err: Any, root: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    if err["type"] == "extra_forbidden":
        parent = _fields_at(loc[:-1], root)
        hint = did_you_mean(str(loc[-1]), parent) if parent else ""
        return f"{_loc(loc)}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{_loc(loc)}: missing required key"
    msg = err["msg"][0].lower() + err["msg"][1:]
    return f"{_loc(loc)}: {msg}, got {err['input']!r}"


def _describe(exc: ValidationError) -> str:
    return describe_validation(exc, SuiteFile)


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    model: type[BaseModel] = root
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _check_plugins(spec: SuiteFile, registry: Registry, path: Path) -> None:
    """Names exist; options exist and take their values (each factory is built once)."""

    def fail(key: str, err: Exception | str) -> None:
        raise ConfigError(f"{path}: {key}: {err}")

    names = [p.name for p in spec.problems]
    for i, problem in enumerate(spec.problems):
        if names.count(problem.name) > 1:
            fail(f"problems[{i}].name", f"duplicate problem name {problem.name!r}")
        factory = _lookup(registry, "cells", problem.cell, f"problems[{i}].cell", fail)
        _check_options(factory, problem.options, f"problems[{i}].options", fail, build=True)
    for kind, sweep, table in (
        ("solvers", spec.matrix.solver, ("matrix.solver", "solver_options")),
        ("gradients", spec.matrix.gradient, ("matrix.gradient", "gradient_options")),
    ):
        options = getattr(spec, table[1])
        factories = [
            _lookup(registry, kind, n, f"{table[0]}[{j}]", fail) for j, n in enumerate(sweep)
        ]
        for name in options:  # options of a registered name left out of the sweep just wait
            if name not in sweep and name not in registry.names(kind):
                fail(f"{table[1]}.{name}", f"not in {table[0]}{did_you_mean(name, sweep)}")
        for name, factory in zip(sweep, factories, strict=True):
            for combo in _product(options.get(name, {})):
                _check_options(factory, combo, f"{table[1]}.{name}", fail, build=True)


def _lookup(registry: Registry, kind: str, name: str, key: str, fail) -> Any:
    try:
        return registry.get(kind, name).obj
    except DeqbenchError as exc:
        fail(key, exc)


def _check_options(factory: Any, options: dict, key: str, fail, build: bool = False) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if params and not takes_any:
        for name in options:
            if name not in params:
                fail(f"{key}.{name}", f"unknown option{did_you_mean(name, params)}")
    if build:
        try:
            factory(**options)
        except (TypeError, ValueError, DeqbenchError) as exc:
            fail(key, f"{_sentence(exc)} (options {options})")


check_options = _check_options  #: shared with training suites


def _sentence(exc: Exception) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()


def _product(options: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(options)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*options.values())]


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
    return Suite(suite.path, spec, runs, suite.warnings)


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
    return Suite(suite.path, suite.spec, runs, suite.warnings)
