"""The report files: the result CSV (one row per run), its traces CSV and its metadata JSON.

Rows are appended and flushed as each run ends, so a crash loses only the run in progress.
Every column is listed here with its unit and meaning; ``reports/README.md`` documents the same
list, and a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
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
    "max_iter": "forward cap on evaluations of f",
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

FAILED = ("oom", "error", "timeout", "interrupted")


def companion(path: Path, suffix: str) -> Path:
    """``reports/x.csv`` → ``reports/x.<suffix>``."""
    return path.with_name(path.stem + "." + suffix)


class ReportWriter:
    """Appends result rows and trace rows to their CSVs, flushed to disk after each run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.traces = companion(self.path, "traces.csv")
        self.meta = companion(self.path, "meta.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: Mapping[str, Any], traces: Iterable[Mapping[str, Any]] = ()) -> None:
        _append(self.path, [row], COLUMNS)
        _append(self.traces, list(traces), TRACE_COLUMNS)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        self.meta.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def _append(path: Path, rows: list[Mapping[str, Any]], columns: Mapping[str, str]) -> None:
    unknown = {k for row in rows for k in row} - set(columns)
    if unknown:
        raise KeyError(f"undocumented report columns: {sorted(unknown)}")
    new = not path.exists() or path.stat().st_size == 0
    frame = pd.DataFrame(rows, columns=list(columns))
    with path.open("a", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, header=new, index=False)
        fh.flush()
        os.fsync(fh.fileno())


def read_report(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def metadata(plugins: Mapping[str, str], failures: Iterable[Any], device: torch.device) -> dict:
    """Versions, device, CPU count, git commit and plugins, for the ``.meta.json`` file."""
    from deqbench import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deqbench": __version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        "plugins": dict(plugins),
        "plugin_failures": [{"plugin": f.plugin, "error": f.error} for f in failures],
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


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
