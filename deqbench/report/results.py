"""The report files: the result CSV (one row per run), its traces CSV and its metadata JSON.

Rows are appended and flushed as each run ends, so a crash loses only the run in progress.
Every column is listed here with its unit and meaning; ``reports/README.md`` documents the same
list, and a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from deqbench.measure import environment, openmp
from deqbench.report.schema import Row, finite_number, undocumented

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
        median, width = finite_number(row.get(figure)), finite_number(row.get(iqr))
        if median is not None and width is not None and median > 0 and width > spread * median:
            noisy.append(figure)
    return " ".join(noisy)


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


def companion_suffixes() -> list[str]:
    """The companion files any registered kind of run writes beside its report."""
    from deqbench.plugins import get_registry

    kinds = get_registry().entries(["run_kinds"])
    return sorted({suffix for entry in kinds for suffix in entry.obj.companions})


def companion(path: Path, suffix: str) -> Path:
    """``reports/x.csv`` → ``reports/x.<suffix>``."""
    return path.with_name(path.stem + "." + suffix)


class ReportWriter:
    """Appends a kind's result rows and companion rows to their CSVs, flushed after each run."""

    def __init__(self, path: str | Path, kind: Any) -> None:
        self.path = Path(path)
        self.kind = kind  #: a `deqbench.runs.kind.RunKind`
        self.columns = kind.columns
        self.meta = companion(self.path, "meta.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: Row, companions: Mapping[str, Iterable[Row]] = {}) -> None:
        """Write ``row`` and its rows in each companion file (``"traces.csv"`` → rows)."""
        undeclared = set(companions) - set(self.kind.companions)
        if undeclared:
            raise KeyError(
                f"companion files the {self.kind.name} kind does not declare: {undeclared}"
            )
        # The row last: it marks the run finished (`deqbench.execution.resume` drops the
        # companion rows of a run without one), so a kill between the writes duplicates nothing.
        for suffix, columns in self.kind.companions.items():
            _append(companion(self.path, suffix), list(companions.get(suffix, ())), columns)
        _append(self.path, [row], self.columns)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Write the ``.meta.json`` file, then the report's header if it has none yet: from
        the suite's start the report exists, so one killed before its first row (a day-long
        first run) can still be resumed from its checkpoints."""
        self.meta.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        _append(self.path, [], self.columns)

    def update_meta(self, **fields: Any) -> None:
        """Set ``fields`` in the ``.meta.json`` file, keeping its other keys."""
        meta = json.loads(self.meta.read_text(encoding="utf-8"))
        self.meta.write_text(
            json.dumps(meta | fields, indent=2, default=str) + "\n", encoding="utf-8"
        )


def _append(path: Path, rows: list[Mapping[str, Any]], columns: Mapping[str, str]) -> None:
    unknown = undocumented(rows, columns)
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


def metadata(
    plugins: Mapping[str, str], failures: Iterable[Any], device: torch.device, device_name: str
) -> dict:
    """Versions, device, CPU count, plugins and `deqbench.measure.environment`'s capture (the
    CUDA stack, git state, numerics settings), for the ``.meta.json`` file. ``packages`` holds
    what this process has imported so far; the runner adds its runs' imports at the end."""
    from deqbench import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deqbench": __version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        # The vector ISA torch's CPU kernels dispatch to: results are bitwise reproducible on
        # one machine, and another ISA sums floats in another order (docs/reproducibility.md).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "openmp_wait": openmp.describe(),
        **environment.environment(),
        "packages": environment.imported_packages(environment.top_level_modules()),
        "plugins": dict(plugins),
        "plugin_failures": [{"plugin": f.plugin, "error": f.error} for f in failures],
    }
