"""The training kind of run: a registered model with a DEQ layer (or an explicit baseline)
trained, evaluated, gradient-checked and checkpointed, summed up as one row, its steps and its
forward traces."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from deqbench.report.schema import FAILED, Metric, Row, RunStatus
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.kind import Job, RunKind, RunOutput
from deqbench.runs.train.columns import EVAL_COLUMNS, STEP_COLUMNS, TRAIN_COLUMNS
from deqbench.suite.train import TrainSuite, load_train_suite, smoke_train
from deqbench.suite.train_tables import TrainFile

#: Identity columns of a training report: the run's declared recipe and its smoke cap.
TRAIN_KEYS = (
    "model",
    "head",
    "dataset",
    "image_size",
    "batch_size",
    "solver",
    "solver_options",
    "gradient",
    "gradient_options",
    "f_max_iter",
    "f_tol",
    "b_max_iter",
    "model_options",
    "seed",
    "precision",
    "max_steps",
)
TRAIN_METRICS = (
    Metric("eval_top1", "top-1", points=True, higher_is_better=True),
    Metric("eval_top5", "top-5", points=True, higher_is_better=True),
    Metric("eval_miou", "mIoU", points=True, higher_is_better=True),
    Metric("eval_pixel_acc", "pixel acc", points=True, higher_is_better=True),
    Metric("step_ms_median", "step ms"),
    Metric("images_per_s", "img/s", higher_is_better=True),
    Metric("train_s", "train s"),
    Metric("time_to_target_s", "to target s"),
    Metric("f_nfe_mean", "f NFE"),
    Metric("b_nfe_mean", "b NFE"),
    Metric("backward_ms_median", "bwd ms"),
    Metric("eval_nfe_mean", "eval NFE"),
    Metric("saved_mb", "saved MB"),
    Metric("peak_mem_mb", "CUDA peak MB"),
    Metric("rss_peak_mb", "RSS MB"),
    Metric("train_loss_final", "final loss", marked=False),
)


def source_key(run: Any) -> str:
    """Runs whose datasets differ only in batch sizes share one data source."""
    return run.spec.dataset.model_dump_json(exclude={"batch_size", "eval_batch_size"})


class TrainKind(RunKind):
    """Training runs: the base run × ``[matrix]`` + ``[[include]]`` × seed repeats. A run whose
    loss turned non-finite trained no model: ``diverged`` is a failed run here."""

    name = "train"
    title = "training"
    columns = TRAIN_COLUMNS
    companions = MappingProxyType(
        {"steps.csv": STEP_COLUMNS, "traces.csv": TRACE_COLUMNS, "evals.csv": EVAL_COLUMNS}
    )
    keys = TRAIN_KEYS
    tiebreakers = ("options", "run")
    metrics = TRAIN_METRICS
    signature = frozenset({"status", "model", "dataset"})
    failed = FAILED | {RunStatus.DIVERGED}
    ok = frozenset({RunStatus.COMPLETED})
    smoke_options = MappingProxyType(
        {"--max-steps": "max_steps", "--max-eval-batches": "max_eval_batches"}
    )
    schema = TrainFile
    distributed = True

    def load(self, path: Path, data: dict[str, Any], registry: Any) -> TrainSuite:
        return load_train_suite(path, data, registry)

    def smoke(
        self, suite: TrainSuite, max_steps: int | None = None, max_eval_batches: int | None = None
    ) -> TrainSuite:
        return smoke_train(suite, max_steps, max_eval_batches)

    def settings(self, suite: TrainSuite, run: Any) -> Any:
        return run.spec.suite  # an include or the matrix may set suite.timeout, say

    def prepare(
        self, suite: TrainSuite, *, device: Any, dist: Any, report: Path, finished: frozenset[int]
    ) -> dict:
        """Check each distinct data source once, before anything trains, so a missing root
        stops the suite with its `DatasetError` rather than failing every run. A run in a
        worker builds its own source, so here the dataset's cheap ``check`` suffices; runs in
        this process share the source built here. Also removes the checkpoints that a kill
        between a finished run's row and its checkpoint's removal left behind."""
        from deqbench.data import check_source
        from deqbench.execution.checkpoint import checkpoint_path, remove_checkpoint
        from deqbench.plugins import get_registry

        sources: dict[str, Any] = {}
        for run in suite.runs:
            key, ds = source_key(run), run.spec.dataset
            here = not run.spec.suite.isolate or dist.enabled
            if sources.get(key) is not None or (key in sources and not here):
                continue  # built already, or checked already and only workers build it
            factory = get_registry().get("datasets", ds.name).obj
            if here:
                sources[key] = factory(root=ds.root or None, image_size=ds.image_size, **ds.options)
            else:
                sources[key] = check_source(
                    factory, root=ds.root or None, image_size=ds.image_size, options=ds.options
                )
        if dist.is_main and not suite.spec.suite.keep_checkpoints:
            for index in finished:
                remove_checkpoint(checkpoint_path(report, index))
        return sources

    def identity(self, suite: TrainSuite, run: Any, device: Any) -> Row:
        from deqbench.runs.train.run import identity

        return identity(suite.name, run, device)

    def execute(self, job: Job) -> RunOutput:
        from deqbench.execution.checkpoint import checkpoint_path
        from deqbench.runs.train.run import train_run

        run, dist, info = job.run, job.dist, job.run.spec.suite
        here = not job.in_worker  # a worker builds its own source, and is killed at its timeout
        result = train_run(
            run,
            job.device,
            observer=job.observer if dist.is_main else None,
            source=job.shared.get(source_key(run)) if here else None,
            report=job.report,
            dist=dist,
            checkpoint=checkpoint_path(job.report, run.index) if info.checkpoint else None,
            resume=job.resume,
            timeout_s=info.timeout if here else None,  # in this process the loop checks it
        )
        companions = {
            "steps.csv": result.steps,
            "traces.csv": result.traces,
            "evals.csv": result.evals,
        }
        return RunOutput(result.metrics, companions)

    def finish(self, job: Job, row: Row) -> None:
        from deqbench.execution.checkpoint import checkpoint_path, remove_checkpoint

        info = job.run.spec.suite
        final = row["status"] != RunStatus.INTERRUPTED  # resuming skips this run from now on
        if info.checkpoint and final and not info.keep_checkpoints:
            remove_checkpoint(checkpoint_path(job.report, job.run.index))

    def display(self, console: Any, suite_name: str, runs: int) -> Any:
        from deqbench.report.display import TrainDisplay

        return TrainDisplay(console, suite_name, runs)

    def summary(self, rows: list[Row]) -> list[Any]:
        from deqbench.report.tables import seeds_table, train_table

        seeds = seeds_table(rows, self.keys)
        return [train_table(rows, self.keys), *([seeds] if seeds is not None else [])]

    def warnings(self, rows: list[Row]) -> list[str]:
        from deqbench.report.targets import missed

        return missed(rows)  # the runs that never reached their [eval] target


TRAIN = TrainKind()
