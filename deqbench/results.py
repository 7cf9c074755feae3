"""The report files: the result CSV (one row per run), its traces CSV and its metadata JSON.

Rows are appended and flushed as each run ends, so a crash loses only the run in progress.
Every column is listed here with its unit and meaning; ``reports/README.md`` documents the same
list, and a test keeps the two in step.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

#: Result columns, in file order, with their meaning (units are in the names).
COLUMNS: dict[str, str] = {
    "run": "index of the run in the suite's matrix",
    "suite": "suite name",
    "problem": "problem name from the suite",
    "cell": "registered cell of the problem",
    "batch_size": "samples per solve",
    "state_dim": "flat state size D per sample",
    "solver": "registered forward solver",
    "solver_options": "forward solver options (JSON)",
    "max_iter": "forward cap on evaluations of f, as the suite declares it",
    "smoke_max_iter": "smoke cap the run actually used (--limit), when below max_iter; else empty",
    "tol": "forward tolerance",
    "stop_mode": "abs (‖f(z)−z‖) or rel (‖f(z)−z‖/‖f(z)‖)",
    "gradient": "gradient estimator (empty for forward-only runs)",
    "gradient_options": "gradient estimator options (JSON)",
    "device": "device the run used",
    "dtype": "floating-point type",
    "status": "converged | max_iter | diverged | oom | error | timeout | interrupted",
    "error": "why the run did not converge or failed (empty when it converged)",
    "nfe": "evaluations of f by the forward solver (batched calls)",
    "nstep_median": "median over samples of iterations before each sample stopped",
    "converged_frac": "fraction of samples whose recomputed residual is within tol",
    "rel_residual_median": "median over samples of ‖f(z)−z‖/‖f(z)‖, recomputed on the returned z",
    "rel_residual_max": "max over samples of the recomputed relative residual",
    "abs_residual_max": "max over samples of the recomputed ‖f(z)−z‖",
    "solve_ms_median": "median wall time of one solve, ms, after warm-up",
    "solve_ms_iqr": "interquartile range of the solve time, ms",
    "bare_ms_median": "median wall time of a bare z = f(z) loop with the same NFE, ms",
    "bare_ms_iqr": "interquartile range of the bare loop's time, ms",
    "overhead_per_nfe": "solve time ÷ time of a bare loop with the same NFE: the median over "
    "repeats of the ratio of a solve and the bare loop timed right after it",
    "overhead_iqr": "interquartile range of those per-repeat ratios",
    "solve_cost_f_evals": "solve time in units of one bare evaluation of f timed beside it "
    "(= nfe × overhead_per_nfe): comparable across runs when the machine's speed drifts",
    "solver_mem_mb": "peak live memory of the solver's own tensors (f's excluded), MB",
    "spectral_radius_median": "median over samples of the spectral radius of ∂f/∂z at the "
    "returned z (Arnoldi, correct for complex eigenvalues)",
    "forward_ms_median": "median wall time of the DEQ forward (solve + estimator set-up), ms",
    "backward_ms_median": "median wall time of the backward to the parameters, ms",
    "backward_ms_iqr": "interquartile range of the backward time, ms",
    "step_ms_median": "median wall time of forward + backward (a training step), ms",
    "b_nfe": "evaluations (vector-Jacobian products) of the backward solve; empty if none",
    "b_status": "status of the backward solve; empty for estimators that solve none",
    "b_rel_residual_max": "max over samples of the backward solve's relative residual",
    "grad_cosine": "cosine between the estimator's parameter gradient and the exact one",
    "grad_rel_error": "‖estimate − exact‖ / ‖exact‖ over all parameter gradients",
    "saved_mb": "bytes autograd saved for the backward (parameters excluded, storage counted "
    "once), MB",
    "peak_mem_mb": "CUDA only: peak allocated memory of forward + backward above the start, MB",
    "rss_peak_mb": "CPU: the process's peak resident memory up to the end of this run, MB",
    "notes": "caveats of the measurement, e.g. a reference gradient that did not converge",
    "noisy": "figures too spread to trust: their IQR is over 10 % of their median "
    "(space-separated column names; empty when none)",
    "repeats": "timed repeats behind the medians",
    "wall_s": "wall time of the whole run, seconds",
}

#: Convergence-trace columns: one row per run per forward solver step.
TRACE_COLUMNS: dict[str, str] = {
    "run": "index of the run (joins the result CSV)",
    "step": "iteration k; the residual is that of iterate z_k",
    "abs_residual_median": "median over samples of ‖f(z_k)−z_k‖",
    "abs_residual_max": "max over samples of ‖f(z_k)−z_k‖",
    "rel_residual_median": "median over samples of ‖f(z_k)−z_k‖/‖f(z_k)‖",
    "rel_residual_max": "max over samples of the relative residual",
}

#: Statuses of a run that failed, in any suite: the suite exits with 1 when a row has one.
FAILED = ("oom", "error", "timeout", "interrupted", "crashed")
#: A training run that diverged (its loss turned NaN) trained no model: it failed too. A solve
#: run's ``diverged`` is not here: like ``max_iter`` it is the solver's measured outcome on the
#: problem, and a suite that compares solvers on hard problems expects some to diverge.
TRAIN_FAILED = (*FAILED, "diverged")


def is_failed(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is a failed run (`FAILED`; `TRAIN_FAILED` for a training suite's row)."""
    failed = TRAIN_FAILED if row.get("kind") == "train" else FAILED
    return row.get("status") in failed


#: Result columns of training suites (``kind = "train"``), in file order. Explicit models leave
#: the solver, gradient and ``f_*``/``b_*`` columns empty.
TRAIN_COLUMNS: dict[str, str] = {
    "run": "index of the run in the suite's expansion (matrix, then includes, × repeats)",
    "suite": "suite name",
    "kind": "train",
    "model": "registered model",
    "head": "registered head (empty: the model's own)",
    "dataset": "registered dataset",
    "image_size": "input size the dataset was asked for, pixels",
    "batch_size": "training samples per step",
    "solver": "forward solver of the DEQ (empty for explicit models)",
    "solver_options": "forward solver options (JSON)",
    "gradient": "gradient estimator (empty for explicit models)",
    "gradient_options": "gradient estimator options (JSON)",
    "f_max_iter": "forward iteration cap (empty: the model variant's own)",
    "f_tol": "forward tolerance",
    "b_max_iter": "backward iteration cap (empty: the model variant's own)",
    "model_options": "model options (JSON)",
    "options": "the matrix/include keys that define this run and their values (JSON)",
    "seed": "seed of the run (suite seed + repeat)",
    "precision": "fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler)",
    "max_steps": "smoke cap on training steps (--max-steps); empty when none",
    "status": "completed | diverged | oom | error | timeout | interrupted | crashed",
    "error": "why the run failed or diverged (empty when it completed)",
    "device": "device the run used",
    "world_size": "processes (ranks) the run trained on under torch.distributed; batch_size is "
    "the global batch, batch_size / world_size per rank",
    "resumed_from_step": "the checkpointed step the run was resumed from (--resume); empty when "
    "it ran from the start",
    "params": "trainable parameters",
    "epochs_done": "passes over the training split done (fractional)",
    "steps_done": "optimizer steps done",
    "unrolled_steps": "steps done in the unrolled warm-up mode",
    "equilibrium_steps": "steps done in equilibrium mode (all steps of explicit models)",
    "train_loss_final": "training loss of the last step (Jacobian penalty included, as in loss)",
    "train_s": "wall time of the training loop, evaluations excluded, seconds",
    "images_per_s": "training images per second over the whole loop",
    "step_ms_median": "median wall time of a training step, ms, after warm-up: equilibrium "
    "steps only, without the first and the memory-metered step",
    "step_ms_iqr": "interquartile range of those step times, ms",
    "f_nfe_mean": "mean forward NFE over equilibrium-mode training steps",
    "f_rel_residual_final": "worst relative residual of the last training step's forward",
    "f_rel_residual_median_final": "median over samples of the last training step's forward "
    "relative residual (above ~0.05 the solve did not find an equilibrium)",
    "f_converged_frac": "fraction of training forwards in which every sample reached f_tol",
    "b_nfe_mean": "mean backward-solve NFE per step (empty for estimators that solve none)",
    "grad_checks": "training steps whose gradient was checked against the exact implicit "
    "gradient ([eval] grad_check, grad_check_every; implicit models in equilibrium mode)",
    "grad_cosine_median": "median over the checks of the cosine between the run's parameter "
    "gradient of the task loss and the exact implicit one (same batch, weights, dropout masks)",
    "grad_cosine_worst": "lowest of those cosines",
    "grad_rel_error_median": "median over the checks of ‖run's − exact‖ / ‖exact‖",
    "grad_rel_error_worst": "largest of those relative errors",
    "grad_check_s": "wall time of the gradient checks, seconds (excluded from train_s)",
    "saved_mb": "bytes autograd saved for the backward on one training step (the first in "
    "equilibrium mode; parameters excluded, storage counted once), MB",
    "peak_mem_mb": "CUDA only: peak allocated memory of the run, MB",
    "rss_peak_mb": "CPU: the process's peak resident memory during this run (reset at its "
    "start on Linux), MB; under torch.distributed, the largest over the ranks (as peak_mem_mb)",
    "eval_top1": "top-1 accuracy on the eval split, percent (classification)",
    "eval_top1_ci_low": "lower end of the 95 % Wilson score interval of eval_top1 over "
    "eval_count images, percent",
    "eval_top1_ci_high": "upper end of that interval, percent",
    "eval_top5": "top-5 accuracy on the eval split, percent (classification)",
    "eval_top5_ci_low": "lower end of the 95 % Wilson score interval of eval_top5, percent",
    "eval_top5_ci_high": "upper end of that interval, percent",
    "eval_miou": "mean intersection over union, percent (segmentation; ignore label skipped); "
    "no interval: a mean of per-class ratios is not a binomial proportion",
    "eval_pixel_acc": "pixel accuracy over labelled pixels, percent (segmentation); no "
    "interval: the pixels of an image are not independent trials",
    "eval_count": "images evaluated (every rank's share), the n of the intervals",
    "eval_loss": "mean task loss on the eval split",
    "eval_nfe_mean": "mean forward NFE per eval batch",
    "eval_f_rel_residual_median": "median over the evaluated samples of the forward relative "
    "residual (under torch.distributed, the largest of the ranks' medians)",
    "wall_s": "wall time of the whole run (build, train, evaluate), seconds; of this attempt "
    "alone when it was resumed (train_s covers every attempt)",
}

#: Training-step columns (``<name>.steps.csv``): one row per training step of each run.
STEP_COLUMNS: dict[str, str] = {
    "run": "index of the run (joins the result CSV)",
    "step": "optimizer step, from 0",
    "epoch": "passes over the training split completed before this step",
    "mode": "unrolled | equilibrium",
    "loss": "training loss of the step (with the weighted Jacobian penalty when the suite sets "
    "[deq] jac_reg_weight)",
    "lr": "learning rate of the step",
    "f_nfe": "forward NFE of the step (empty in unrolled mode and for explicit models)",
    "f_rel_residual": "worst relative residual of the step's forward",
    "f_rel_residual_median": "median over samples of the relative residual of the step's forward",
    "b_nfe": "backward-solve NFE of the step (empty when none)",
    "images_per_s": "images per second of this step",
    "grad_cosine": "checked steps only: cosine between the step's parameter gradient of the "
    "task loss and the exact implicit gradient on the same batch (deqbench.grad_check)",
    "grad_rel_error": "checked steps only: ‖step's − exact‖ / ‖exact‖",
    "grad_exact_f_residual": "checked steps only: worst relative residual of the exact "
    "gradient's forward solve (Anderson, tol 1e-6)",
    "grad_exact_b_residual": "checked steps only: worst relative residual of the exact "
    "gradient's backward solve (GMRES, tol 1e-7)",
}


#: A timed figure whose interquartile range exceeds this fraction of its median is flagged.
NOISY_SPREAD = 0.10
#: Timed figure → its IQR column. A noisy bare loop makes the overhead ratio noisy too.
_SPREADS = {
    "solve_ms_median": "solve_ms_iqr",
    "bare_ms_median": "bare_ms_iqr",
    "overhead_per_nfe": "overhead_iqr",
    "backward_ms_median": "backward_ms_iqr",
    "step_ms_median": "step_ms_iqr",
}


def noisy_figures(row: Mapping[str, Any], spread: float = NOISY_SPREAD) -> str:
    """The figures of ``row`` whose IQR is over ``spread`` × their median, space-separated
    (empty when none), as pyperf warns of an unstable benchmark. Missing or non-finite
    figures are not judged."""
    noisy = []
    for figure, iqr in _SPREADS.items():
        median, width = _number(row.get(figure)), _number(row.get(iqr))
        if median is not None and width is not None and median > 0 and width > spread * median:
            noisy.append(figure)
    return " ".join(noisy)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_out(path: str | Path) -> Path:
    """``--out``'s path, refused (as a `ConfigError`) when it already holds a report, when it
    is a folder, or when its folder cannot be created or written. Appending to an existing
    report is what resuming a suite does, on purpose, never by accident."""
    from deqbench.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a folder; give a .csv file path")
    if path.exists() and path.stat().st_size > 0:
        raise ConfigError(
            f"--out {path}: a report is already there; give a new path, or delete it first "
            "(deqbench never appends one suite's runs to another's report)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"--out {path}: cannot write to {path.parent} ({reason})") from None
    return path


def companion(path: Path, suffix: str) -> Path:
    """``reports/x.csv`` → ``reports/x.<suffix>``."""
    return path.with_name(path.stem + "." + suffix)


class ReportWriter:
    """Appends result rows and trace rows to their CSVs, flushed to disk after each run."""

    def __init__(self, path: str | Path, kind: str = "solve") -> None:
        self.path = Path(path)
        self.kind = kind
        self.columns = TRAIN_COLUMNS if kind == "train" else COLUMNS
        self.traces = companion(self.path, "traces.csv")
        self.steps = companion(self.path, "steps.csv")  # training suites only
        self.meta = companion(self.path, "meta.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(
        self,
        row: Mapping[str, Any],
        traces: Iterable[Mapping[str, Any]] = (),
        steps: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        # The row last: it marks the run finished (`deqbench.resume` drops the step and trace
        # rows of a run without one), so a kill between the writes duplicates nothing.
        _append(self.traces, list(traces), TRACE_COLUMNS)
        if self.kind == "train":
            _append(self.steps, list(steps), STEP_COLUMNS)
        _append(self.path, [row], self.columns)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Write the ``.meta.json`` file, then the report's header if it has none yet: from
        the suite's start the report exists, so one killed before its first row (a day-long
        first run) can still be resumed from its checkpoints."""
        self.meta.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        _append(self.path, [], self.columns)


def _append(path: Path, rows: list[Mapping[str, Any]], columns: Mapping[str, str]) -> None:
    unknown = {k for row in rows for k in row} - set(columns)
    if unknown:
        raise KeyError(f"undocumented report columns: {sorted(unknown)}")
    new = not path.exists() or path.stat().st_size == 0
    if not rows and not new:
        return
    text = pd.DataFrame(rows, columns=list(columns)).to_csv(header=new, index=False)
    # One unbuffered write of the whole text: an exit at any moment (a second Ctrl-C, a kill)
    # leaves every row whole or absent, never cut.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_report(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def metadata(plugins: Mapping[str, str], failures: Iterable[Any], device: torch.device) -> dict:
    """Versions, device, CPU count, git commit and plugins, for the ``.meta.json`` file."""
    from deqbench import __version__, openmp

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deqbench": __version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu_count": os.cpu_count(),
        # The vector ISA torch's CPU kernels dispatch to: results are bitwise reproducible on
        # one machine, and another ISA sums floats in another order (docs/reproducibility.md).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "openmp_wait": openmp.describe(),
        "git_commit": _git_commit(),
        "plugins": dict(plugins),
        "plugin_failures": [{"plugin": f.plugin, "error": f.error} for f in failures],
    }


def _device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return platform.processor() or platform.machine()
    if torch.cuda.is_initialized():
        return torch.cuda.get_device_name(device)
    # Asking here would create a CUDA context (hundreds of MB of GPU memory) in a suite process
    # whose runs train in workers: ask a short-lived worker instead.
    from deqbench.worker import run_isolated

    answer = run_isolated(cuda_device_name, (str(device),), timeout_s=120)
    return answer.value if answer.status == "ok" else ""


def cuda_device_name(emit: object, device: str) -> str:
    """The name of CUDA ``device`` (a `deqbench.worker.run_isolated` target)."""
    return torch.cuda.get_device_name(torch.device(device))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
