"""The ``tensorboard`` logger of a training suite (``[logging] loggers = ["tensorboard"]``).

Each run writes its per-step scalars (loss, forward/backward NFE, residual, images/s, lr) with
``torch.utils.tensorboard`` into a subfolder of ``<report>.tensorboard/`` beside the report::

    reports/digits-20260101.csv
    reports/digits-20260101.tensorboard/run-000-anderson-ift/events.out.tfevents…

so ``tensorboard --logdir reports/digits-20260101.tensorboard`` shows one curve per run.
tensorboard is an optional package: `TensorBoardLogger.missing` makes its absence one line at
validation, before any run starts. The core registers `TensorBoardLogger` through the
``register_loggers`` hook (`deqbench.builtins`), as a plugin registers its own.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from deqbench.errors import ConfigError
from deqbench.loggers import STEP_SCALARS, LoggedRun, RunLogger

#: Step-row column (`deqbench.runs.train.columns.STEP_COLUMNS`) → TensorBoard tag.
SCALARS = STEP_SCALARS
_INSTALL = "pip install tensorboard"


class ScalarWriter(Protocol):
    """What we use of ``torch.utils.tensorboard.SummaryWriter``."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def tensorboard_available() -> bool:
    """Whether the tensorboard package can be imported (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard(where: str = "[logging] tensorboard") -> None:
    """Raise `ConfigError` naming ``where`` (file and key) when tensorboard is not installed."""
    if not tensorboard_available():
        raise ConfigError(
            f"{where} = true needs the tensorboard package, which is not installed; "
            f"install it ({_INSTALL}) or set the key to false"
        )


def log_root(report: str | Path) -> Path:
    """``reports/x.csv`` → ``reports/x.tensorboard`` (the ``--logdir`` of the whole suite)."""
    report = Path(report)
    return report.with_name(report.stem + ".tensorboard")


def run_folder(report: str | Path, run: int, label: str = "") -> Path:
    """The subfolder of one run: ``run-007`` or ``run-007-<label as a safe name>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")
    return log_root(report) / (f"run-{run:03d}" + (f"-{slug}" if slug else ""))


def _summary_writer(folder: str) -> ScalarWriter:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            f"tensorboard logging to {folder}: the tensorboard package is not installed "
            f"({_INSTALL})"
        ) from None
    return SummaryWriter(log_dir=folder)


class TensorBoardRun:
    """One run's TensorBoard log: `log_step` per step row, `close` at the end (or ``with``).

    ``writer_factory`` (folder → writer) defaults to ``SummaryWriter``; tests pass a fake.
    """

    def __init__(
        self,
        report: str | Path,
        run: int,
        label: str = "",
        writer_factory: Callable[[str], ScalarWriter] | None = None,
    ) -> None:
        self.folder = run_folder(report, run, label)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer: ScalarWriter | None = (writer_factory or _summary_writer)(str(self.folder))

    def log_step(self, row: Mapping[str, Any]) -> None:
        """Write a step row's scalars at its ``step``; empty and non-finite values are skipped
        (a NaN loss ends the run as diverged; the report says so)."""
        self.log_scalars(int(row["step"]), {SCALARS[k]: row.get(k) for k in SCALARS})

    def log_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Write ``tag → value`` at ``step`` (e.g. ``{"eval/top1": 71.2}`` after an eval)."""
        if self._writer is None:
            raise RuntimeError(f"TensorBoard log {self.folder} is closed")
        for tag, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                self._writer.add_scalar(tag, number, step)

    def close(self) -> None:
        """Flush and close the writer; closing twice is harmless."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TensorBoardLogger(RunLogger):
    """The ``tensorboard`` logger: each run's scalars in ``<report>.tensorboard/<run name>/``
    (`TensorBoardRun`). It takes no options."""

    requires = ("tensorboard",)
    install = _INSTALL

    def __init__(self) -> None:
        self._run: TensorBoardRun | None = None

    @classmethod
    def missing(cls) -> str | None:
        if tensorboard_available():
            return None
        return f"needs the tensorboard package, which is not installed; install it: {_INSTALL}"

    def start(self, run: LoggedRun) -> None:
        self._run = TensorBoardRun(run.report, run.index, run.label)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._run is None:
            raise RuntimeError("TensorBoard logger: log_scalars before start")
        self._run.log_scalars(step, scalars)

    def close(self, error: BaseException | None = None) -> None:
        if self._run is not None:
            self._run.close()
