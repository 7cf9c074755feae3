"""The tables of a training-suite file (``[suite] kind = "train"``), as pydantic models.

`deqbench.suite.train` validates a file against `TrainFile` and expands it into runs; each
table's fields, types and defaults are declared here once.
"""

# pydantic copies the tables' mutable defaults per instance; ruff cannot see that `_Table`
# (from another module) is a pydantic model.
# ruff: noqa: RUF012

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator

from deqbench.settings import DEQSpec
from deqbench.suite.duration import Duration
from deqbench.suite.validation import Sweep, _Table

PosInt = Annotated[int, Field(ge=1)]


class TrainSuiteInfo(_Table):
    """The ``[suite]`` table of a training suite."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["train"]
    description: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    repeats: PosInt = 1  #: each run repeated with seeds seed, seed + 1, ...
    threads: PosInt | None = None  #: torch CPU threads; None: torch's own
    isolate: bool = True  #: each run in its own worker process (`deqbench.execution.worker`)
    timeout: Duration | None = None  #: a run's wall-time limit, e.g. "2h"; None: none
    checkpoint: bool = True  #: checkpoint at each epoch end (and every checkpoint_every steps)
    checkpoint_every: Annotated[int, Field(ge=0)] = 0  #: also every N steps; 0: epoch ends only
    keep_checkpoints: bool = False  #: checkpoint the finished run too, and keep it


class DatasetTable(_Table):
    """``[dataset]``: a registered dataset and how to load it."""

    name: str
    root: str = ""  #: "" lets the dataset find its data (environment variables, bundled)
    image_size: PosInt | None = None
    batch_size: PosInt = 64
    eval_batch_size: PosInt | None = None  #: None: as batch_size
    workers: Annotated[int, Field(ge=0)] = 0
    options: dict[str, Any] = {}


class ModelTable(_Table):
    """``[model]``: a registered model and, optionally, a registered head."""

    name: str
    head: str = ""  #: "" keeps the model's own head
    head_options: dict[str, Any] = {}
    options: dict[str, Any] = {}
    #: weights to start from (`deqbench.runs.train.weights`): a deqbench checkpoint or state
    #: dict, or a layout the model declares; "" starts from the model's initialisation
    weights: str = ""
    #: "auto" (told by the keys), "deqbench", or a format the model declares ("mdeq-reference")
    weights_format: str = "auto"


def _settings_table() -> type[_Table]:
    """`DEQTable`, built from `deqbench.settings.DEQSpec`: the same fields, types and defaults."""
    hints = typing.get_type_hints(DEQSpec, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(DEQSpec):
        # pydantic copies a mutable default per instance, so {} may stand for a dict factory
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        fields[f.name] = (hints[f.name], default)
    doc = "``[deq]``: the fields of `deqbench.settings.DEQSpec` (ignored by explicit models)."
    return create_model("DEQTable", __base__=_Table, __doc__=doc, __module__=__name__, **fields)


DEQTable = _settings_table()


class RecipeTable(_Table):
    """``[recipe]``: optimizer, schedule, length, warm-up, clipping, precision."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    momentum: Annotated[float, Field(ge=0)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["constant", "cosine", "poly", "step"] = "cosine"
    schedule_options: dict[str, Any] = {}  #: poly: power; step: gamma, milestones
    # The training length: one of epochs or steps; neither (or 0) evaluates only.
    epochs: Annotated[int, Field(ge=0)] | None = None
    steps: Annotated[int, Field(ge=0)] | None = None
    unrolled_warmup_steps: Annotated[int, Field(ge=0)] = 0
    grad_clip: Annotated[float, Field(ge=0)] = 0.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # Fixed-point correction (DEQ-Flow; docs/fixed-point-correction.md): also supervise fpc_k − 1
    # sampled iterates of the solve, weighted fpc_gamma^(distance to the end); implicit models.
    fpc_k: Annotated[int, Field(ge=0)] = 0  #: 0 or 1: off
    fpc_gamma: Annotated[float, Field(gt=0, le=1)] = 0.8

    @model_validator(mode="after")
    def _one_length(self) -> RecipeTable:
        if self.epochs is not None and self.steps is not None and (self.epochs or self.steps):
            raise ValueError("give exactly one of epochs or steps (neither, or 0: evaluate only)")
        return self

    @property
    def evaluate_only(self) -> bool:
        """No training length: the run evaluates its model (``[model] weights``) only."""
        return not (self.epochs or self.steps)


class EvalSweep(_Table):
    """``[eval] sweep``: forward settings to evaluate the trained model at too, one row each in
    ``<report>.evals.csv`` (every combination when both are given; implicit models only)."""

    f_max_iter: Annotated[list[PosInt], Field(min_length=1)] = []
    f_tol: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = []

    @field_validator("f_max_iter", "f_tol")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) < len(values):
            raise ValueError("give each value once")
        return values

    def settings(self) -> list[dict[str, Any]]:
        """Each swept setting, as `deqbench.deq.DEQ.overridden`'s keywords (none: empty)."""
        axes = {name: getattr(self, name) for name in ("f_max_iter", "f_tol")}
        axes = {name: values for name, values in axes.items() if values}
        if not axes:
            return []
        return [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ]


#: Each ``[eval]`` target key: the eval column it is a threshold on and the task it is for.
TARGETS = {
    "target_top1": ("eval_top1", "classification"),
    "target_miou": ("eval_miou", "segmentation"),
}


class EvalTable(_Table):
    """``[eval]``: when to evaluate and on how much of the eval split, and when to check the
    run's gradients against the exact implicit gradient (`deqbench.runs.train.grad_check`);
    test-time compute (docs/test-time-compute.md): the forward solve of evaluation, a sweep of
    it and path independence."""

    every_epochs: Annotated[int, Field(ge=0)] = 1  #: 0: only at the end
    max_batches: Annotated[int, Field(ge=0)] = 0  #: 0: the whole split
    grad_check: bool = True  #: check the last training step's gradient (implicit models)
    grad_check_every: Annotated[int, Field(ge=0)] = 0  #: also every N steps; 0: the last only
    # Time to a target (`deqbench.runs.train.target`): the top-1 (classification) or mIoU
    # (segmentation) in percent that an evaluation must reach; None: no target.
    target_top1: Annotated[float, Field(gt=0, le=100)] | None = None
    target_miou: Annotated[float, Field(gt=0, le=100)] | None = None
    # The forward solve at evaluation, when it differs from training's (test-time compute);
    # None keeps the [deq] setting.
    solver: str | None = None
    solver_options: dict[str, Any] = {}  #: with ``solver`` only
    f_max_iter: PosInt | None = None
    f_tol: Annotated[float, Field(gt=0)] | None = None
    stop_mode: Literal["abs", "rel"] | None = None
    sweep: EvalSweep = EvalSweep()  #: also evaluate at each of these (``<report>.evals.csv``)
    path_independence: bool = False  #: also solve from other starts at the final evaluation

    @model_validator(mode="after")
    def _one_target(self) -> EvalTable:
        if self.target_top1 is not None and self.target_miou is not None:
            raise ValueError("give at most one of target_top1 or target_miou")
        return self

    def target(self) -> tuple[str, float] | None:
        """The declared target as (its ``[eval]`` key, percent); None: none."""
        for key in TARGETS:
            if getattr(self, key) is not None:
                return key, getattr(self, key)
        return None

    def deq_settings(self) -> dict[str, Any]:
        """The DEQ settings evaluation overrides (`deqbench.deq.DEQ.overridden`'s names)."""
        names = ("solver", "f_max_iter", "f_tol", "stop_mode")
        out = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        return out | ({"solver_options": dict(self.solver_options)} if self.solver else {})


#: Each ``[reference]`` metric key: the eval column it is checked on and the task it is for.
REFERENCE_METRICS = {
    "top1": ("eval_top1", "classification"),
    "top5": ("eval_top5", "classification"),
    "miou": ("eval_miou", "segmentation"),
}
Percent = Annotated[float, Field(ge=0, le=100)]


class ReferenceTable(_Table):
    """``[reference]``: the published figure a run is checked against (docs/reference-results.md).

    A run is reproduced when its final evaluation's metric is within ``band`` points of the
    published figure, either side: |measured − published| ≤ band. A table with ``band`` and
    ``source`` but no figure states them for the runs that give their figure themselves
    (``"reference.top1"`` in ``[matrix]`` or an ``[[include]]``); a run without one is n/a."""

    top1: Percent | None = None  #: top-1 accuracy, percent (classification)
    top5: Percent | None = None  #: top-5 accuracy, percent (classification)
    miou: Percent | None = None  #: mean IoU, percent (segmentation)
    band: Annotated[float, Field(gt=0)] | None = None  #: points either side of the figure
    source: str | None = None  #: where the figure is published, e.g. "JR paper, Table 2"

    @field_validator("source")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError('expected where the figure is published, e.g. "JR paper, Table 2"')
        return value

    @model_validator(mode="after")
    def _complete(self) -> ReferenceTable:
        given = [key for key in REFERENCE_METRICS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"give one published figure, not {' and '.join(given)}")
        missing = [key for key in ("band", "source") if getattr(self, key) is None]
        if given and missing:
            raise ValueError(f"{given[0]} needs {' and '.join(missing)} too")
        return self

    def figure(self) -> tuple[str, float] | None:
        """The published figure as (its key: top1, top5 or miou, percent); None: none."""
        given = [(k, getattr(self, k)) for k in REFERENCE_METRICS if getattr(self, k) is not None]
        return given[0] if given else None

    def columns(self) -> dict[str, Any]:
        """The row's reference columns (all empty without a figure)."""
        figure = self.figure()
        if figure is None:
            return dict.fromkeys(
                ("reference_metric", "reference_value", "reference_band", "reference_source")
            )
        return {
            "reference_metric": REFERENCE_METRICS[figure[0]][0],
            "reference_value": figure[1],
            "reference_band": self.band,
            "reference_source": self.source,
        }


class LoggingTable(_Table):
    """``[logging]``: the experiment loggers each run writes to (`deqbench.loggers`), by their
    registered names (``deqbench list loggers``), and each one's options:
    ``[logging.options.wandb] project = "deq"``."""

    loggers: list[str] = []  #: e.g. ["tensorboard", "mlflow"]
    options: dict[str, dict[str, Any]] = {}  #: per logger name: its factory's keywords
    tensorboard: bool = False  #: deprecated: the same as "tensorboard" in ``loggers``
    #: Without a terminal (a pipe, a Slurm log), a progress line every this many steps and at
    #: the last, besides one per interim evaluation and per finished run; 0: no step lines.
    #: Display only: left out of the suite's fingerprint, so it never stops a --resume or merge.
    progress_every: Annotated[int, Field(ge=0, exclude=True)] = 100

    @field_validator("loggers")
    @classmethod
    def _once(cls, names: list[str]) -> list[str]:
        if len(set(names)) < len(names):
            raise ValueError("name each logger once")
        return names

    def selected(self) -> list[str]:
        """The loggers' names, with ``tensorboard = true`` as ``"tensorboard"``."""
        alias = self.tensorboard and "tensorboard" not in self.loggers
        return [*self.loggers, *(["tensorboard"] if alias else [])]


class TrainFile(_Table):
    """A whole training-suite file (``matrix`` and ``include`` hold dotted-key overrides)."""

    #: tables whose keys are dotted keys of the file (True: a sweep of values), for the
    #: messages of ``--set`` (`deqbench.suite.overrides`)
    dotted_tables: ClassVar[dict[str, bool]] = {"matrix": True, "include": False}

    suite: TrainSuiteInfo
    dataset: DatasetTable
    model: ModelTable
    deq: DEQTable = DEQTable()
    recipe: RecipeTable = RecipeTable()  #: omitted: evaluate only
    eval: EvalTable = EvalTable()
    reference: ReferenceTable = ReferenceTable()
    logging: LoggingTable = LoggingTable()
    matrix: dict[str, Sweep] = {}
    include: list[dict[str, Any]] = []
