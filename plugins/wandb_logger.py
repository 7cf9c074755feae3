"""The ``wandb`` plugin: each training run as a Weights & Biases run (the ``[wandb]`` extra).

A suite selects it with ``[logging] loggers = ["wandb"]``; its options go in
``[logging.options.wandb]``. The run's config is the suite's tables as they apply to it, its
history the step rows' and evaluations' scalars at their training step, and its summary the
report row. Settings left out are W&B's own, so ``WANDB_MODE=offline``, ``WANDB_DIR`` and
``WANDB_PROJECT`` apply. This module imports wandb only when a run starts: registering and
listing the logger cost nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from deqbench.hookspecs import hookimpl
from deqbench.loggers import LoggedRun, RunLogger, finite

MODES = ("online", "offline", "disabled", "shared")


class WandbLogger(RunLogger):
    """Options: ``project`` (default ``$WANDB_PROJECT``, else "deqbench"), ``entity``,
    ``group`` (default: the suite's name), ``tags``, ``mode`` (online, offline, disabled;
    default ``$WANDB_MODE``, else online) and ``dir`` (default ``$WANDB_DIR``, else the
    current folder)."""

    requires = ("wandb",)
    install = "pip install 'deqbench[wandb]'"

    def __init__(
        self,
        project: str = "",
        entity: str = "",
        group: str = "",
        tags: list[str] | tuple[str, ...] = (),
        mode: str = "",
        dir: str = "",  # W&B's own name for it
    ) -> None:
        if mode and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"tags must be a list of strings, got {tags!r}")
        self.project, self.entity, self.group = project, entity, group
        self.tags, self.mode, self.dir = tuple(tags), mode, dir
        self._run: Any = None
        self._exit_code = 1  #: until `finish` hears the run completed

    def start(self, run: LoggedRun) -> None:
        import wandb

        self._run = wandb.init(
            project=self.project or os.environ.get("WANDB_PROJECT") or "deqbench",
            entity=self.entity or None,
            group=self.group or run.suite,
            name=run.name,
            tags=list(self.tags) or None,
            job_type="train",
            config=run.config,
            mode=self.mode or None,
            dir=self.dir or None,
            reinit="create_new",  # runs of one process (isolate = false) each get their own
            # our own display owns the terminal: W&B neither captures nor prints to it
            settings=wandb.Settings(console="off", silent=True),
        )

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._run is None:
            raise RuntimeError("W&B logger: log_scalars before start")
        if scalars:
            self._run.log(dict(scalars), step=step)

    def finish(self, row: Mapping[str, Any]) -> None:
        """The report row as the run's summary: its figures, status and identity."""
        if self._run is None:
            return
        numbers = finite(row)
        text = {k: str(v) for k, v in row.items() if k not in numbers and _is_text(v)}
        self._run.summary.update({**text, **numbers})
        self._exit_code = 0 if str(row.get("status")) == "completed" else 1

    def close(self, error: BaseException | None = None) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.finish(exit_code=1 if error is not None else self._exit_code)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


@hookimpl
def register_loggers(register):
    register(
        "wandb",
        WandbLogger,
        description="Weights & Biases: config, step scalars, evals, the row as summary "
        "(needs wandb)",
    )
