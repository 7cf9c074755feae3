"""What a kind of run is. A suite's ``[suite] kind`` names one; the runner, the command line
and the report tools ask the kind, never the name.

A kind declares its report schema (columns, companion files, identity keys, compared figures,
failed statuses), how a suite file of its kind loads and shrinks to a smoke run, and how one run
executes: `RunKind.execute` in whatever process the runner chose. Kinds register through the
plugin hook ``register_run_kinds``, the built-ins (`deqbench.runs.solve.kind`,
`deqbench.runs.train.kind`) like any plugin's.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from deqbench.report.schema import FAILED, Metric, Row, RunStatus


class SuiteLike(Protocol):
    """What the runner needs of a loaded suite of any kind: a frozen dataclass (a share is
    `dataclasses.replace` of its runs) whose ``spec`` is the validated file, with a ``[suite]``
    table (``spec.suite``: ``name``, ``device``, ``threads``, ``isolate``, ``timeout``)."""

    path: Path
    spec: Any  #: the validated suite file (a pydantic model: its dump is the fingerprint)
    runs: Sequence[Any]  #: each with an ``index`` and a ``label``
    kind: str  #: the name of its `RunKind`
    warnings: tuple[str, ...]  #: what the user may not mean (a huge matrix, say)

    @property
    def name(self) -> str: ...


class Observer(Protocol):
    """Follows a run's progress (the live display); every method is optional to call."""

    def run_started(self, run: Any, total_steps: int) -> None: ...

    def progress(self, snapshot: dict[str, Any]) -> None: ...


@dataclass
class Job:
    """One run to execute, and what the runner hands it. ``shared`` is what `RunKind.prepare`
    returned for the suite (one object for all its runs, in this process)."""

    suite: Any
    run: Any
    device: Any  #: a torch.device
    report: Path  #: the report's CSV (checkpoints and logs go beside it)
    resume: bool = False  #: the suite is resuming a report: continue from a checkpoint
    observer: Observer | None = None
    dist: Any = None  #: the `deqbench.execution.distributed.Dist` of a torchrun job
    shared: Any = None
    in_worker: bool = False  #: executing in a worker process of its own (``[suite] isolate``)


@dataclass
class RunOutput:
    """What a run produced: its row's figures and its rows in each companion file.
    ``shared`` is what a run in a worker hands back for the suite's later runs
    (`RunKind.from_worker`)."""

    metrics: Row = field(default_factory=dict)
    companions: dict[str, list[Row]] = field(default_factory=dict)  #: suffix → rows
    shared: Any = None
    #: the top-level modules a run in a worker imported, for ``.meta.json``'s packages
    modules: frozenset[str] = frozenset()


class RunKind(abc.ABC):
    """A kind of run: its report schema, its suite file and how one of its runs executes.

    Subclasses set the class attributes and implement `load`, `identity` and `execute`; the
    rest has defaults that suit a kind with no shared state and no smoke options.
    """

    name: ClassVar[str]  #: as ``[suite] kind`` names it
    title: ClassVar[str]  #: in messages: "a {title} suite"
    columns: ClassVar[Mapping[str, str]]  #: result columns in file order → their meaning
    companions: ClassVar[Mapping[str, Mapping[str, str]]] = {}  #: "traces.csv" → its columns
    keys: ClassVar[Sequence[str]] = ()  #: identity columns: rows equal in them measured alike
    tiebreakers: ClassVar[Sequence[str]] = ("run",)  #: added while one report's rows collide
    metrics: ClassVar[Sequence[Metric]] = ()  #: the figures `deqbench compare` compares
    signature: ClassVar[frozenset[str]] = frozenset()  #: columns that mark a report of it
    failed: ClassVar[frozenset[RunStatus]] = FAILED  #: statuses counted as failed runs
    ok: ClassVar[frozenset[RunStatus]] = frozenset()  #: statuses of a run that went well
    #: The smoke options of ``deqbench run`` this kind takes: flag → `smoke` keyword.
    smoke_options: ClassVar[Mapping[str, str]] = {}
    schema: ClassVar[Any]  #: the suite file's pydantic model (for ``--set`` messages)
    distributed: ClassVar[bool] = False  #: its runs may span processes (``--nproc``)

    # -- the suite file ---------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, path: Path, data: dict[str, Any], registry: Any) -> SuiteLike:
        """The validated suite of the parsed file ``data`` (overrides applied)."""

    def smoke(self, suite: Any, **options: Any) -> Any:
        """``suite`` as a smoke run, ``options`` the given `smoke_options` (never all None)."""
        return suite

    def settings(self, suite: Any, run: Any) -> Any:
        """The ``[suite]`` table as it applies to ``run`` (``isolate``, ``timeout``,
        ``threads``): the suite's, unless the kind lets a run override it."""
        return suite.spec.suite

    # -- executing ----------------------------------------------------------------------------
    def prepare(
        self, suite: Any, *, device: Any, dist: Any, report: Path, finished: frozenset[int]
    ) -> Any:
        """Once per suite, before any run: check what every run needs (a data root, say) and
        return the state its runs share (`Job.shared`). ``finished``: the runs a resumed
        ``report`` already has."""
        return None

    @abc.abstractmethod
    def identity(self, suite: Any, run: Any, device: Any) -> Row:
        """The row's columns that say what the run is, before it runs."""

    @abc.abstractmethod
    def execute(self, job: Job) -> RunOutput:
        """Run ``job``: exceptions propagate, and the runner makes them the row's status."""

    def for_worker(self, job: Job) -> Job:
        """``job`` as it goes to a worker process (picklable): by default without the shared state
        (the worker builds its own) and without the observer (the runner forwards events)."""
        return dataclasses.replace(job, shared=None, observer=None, in_worker=True)

    def from_worker(self, job: Job, output: RunOutput) -> None:
        """Take what a run in a worker handed back (`RunOutput.shared`) into ``job.shared``."""
        return None

    def finish(self, job: Job, row: Row) -> None:
        """After the row is complete and written (by the main process): tidy up (a checkpoint)."""
        return None

    def display(self, console: Any, suite_name: str, runs: int) -> Any:
        """The live display of a suite of this kind: a context manager with ``run_finished(row)``
        and, to follow each run's steps, the `Observer` methods."""
        from deqbench.report.display import ProgressDisplay

        return ProgressDisplay(console, suite_name, runs)

    # -- reading ------------------------------------------------------------------------------
    def summary(self, rows: list[Row]) -> list[Any]:
        """Rich renderables that sum up a finished suite (its tables)."""
        return []

    def warnings(self, rows: list[Row]) -> list[str]:
        """Lines a reader must not miss about these rows (printed as warnings)."""
        return []

    def is_failed(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` is a failed run: its suite exits with 1."""
        return row.get("status") in self.failed
