"""The ``mlflow`` plugin: each training run as an MLflow run (the ``[mlflow]`` extra).

A suite selects it with ``[logging] loggers = ["mlflow"]``; its options go in
``[logging.options.mlflow]``. The run's params are the suite's tables as they apply to it
(dotted keys: ``deq.solver``), its metrics the step rows' and evaluations' scalars at their
training step, then the report row's figures at the last step, with its status as the tag
``deqbench.status``.

Where the runs go: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a local file store
beside the report, ``<report>.mlruns`` (read it with ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui
--backend-store-uri <that folder>``).
MLflow 3 keeps its file store only on request, so for a ``file:`` store this sets
``MLFLOW_ALLOW_FILE_STORE=true`` unless it is set already. mlflow-skinny suffices. This module
imports mlflow only when a run starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deqbench.hookspecs import hookimpl
from deqbench.loggers import LoggedRun, RunLogger, finite

#: MLflow's limits: params per batch call, and a param value's length.
_PARAMS_PER_CALL, _PARAM_CHARS = 100, 6000


def default_store(report: str | Path) -> Path:
    """``reports/x.csv`` → ``reports/x.mlruns``: the file store beside the report."""
    report = Path(report)
    return report.with_name(report.stem + ".mlruns")


class MlflowLogger(RunLogger):
    """Options: ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI``, else the file store
    beside the report), ``experiment`` (default: the suite's name) and ``tags`` (a table of
    strings set on every run)."""

    requires = ("mlflow",)
    install = "pip install 'deqbench[mlflow]'"

    def __init__(
        self, tracking_uri: str = "", experiment: str = "", tags: dict[str, str] | None = None
    ) -> None:
        tags = dict(tags or {})
        if not all(isinstance(v, str) for v in tags.values()):
            raise ValueError(f"tags must be a table of strings, got {tags!r}")
        self.tracking_uri, self.experiment, self.tags = tracking_uri, experiment, tags
        self._client: Any = None
        self._id = ""
        self._state = "FAILED"  #: until `finish` hears the run completed

    def uri(self, run: LoggedRun) -> str:
        """The tracking URI this run logs to."""
        env = os.environ.get("MLFLOW_TRACKING_URI", "")
        return self.tracking_uri or env or default_store(run.report).resolve().as_uri()

    def start(self, run: LoggedRun) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.uri(run)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=uri)
        name = self.experiment or run.suite
        found = client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else client.create_experiment(name)
        tags = {"deqbench.suite": run.suite, "deqbench.run": str(run.index), **self.tags}
        self._id = client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
        self._client = client
        params = [Param(k, str(v)[:_PARAM_CHARS]) for k, v in run.flat_config().items()]
        for i in range(0, len(params), _PARAMS_PER_CALL):
            client.log_batch(self._id, params=params[i : i + _PARAMS_PER_CALL])

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            raise RuntimeError("MLflow logger: log_scalars before start")
        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for tag, value in scalars.items()]
        if metrics:
            self._client.log_batch(self._id, metrics=metrics)

    def finish(self, row: Mapping[str, Any]) -> None:
        """The report row's figures as metrics at its last step; its status as a tag."""
        if self._client is None:
            return
        self.log_scalars(int(row.get("steps_done") or 0), finite(row))
        self._client.set_tag(self._id, "deqbench.status", str(row.get("status", "")))
        if row.get("error"):
            self._client.set_tag(self._id, "deqbench.error", str(row["error"])[:5000])
        self._state = "FINISHED" if str(row.get("status")) == "completed" else "FAILED"

    def close(self, error: BaseException | None = None) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        state = self._state
        if error is not None:
            state = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            client.set_tag(self._id, "deqbench.error", f"{type(error).__name__}: {error}"[:5000])
        client.set_terminated(self._id, state)


@hookimpl
def register_loggers(register):
    register(
        "mlflow",
        MlflowLogger,
        description="MLflow: params, step scalars, evals, the row's figures (needs mlflow; "
        "a file store beside the report by default)",
    )
