"""Drawing a report as PNGs with matplotlib (the Agg canvas; no pyplot, no display needed).

From a training report: accuracy against step time (one point per run,
`deqbench.report.plot_accuracy`), training memory per configuration against the forward
iteration cap (`deqbench.report.plot_memory`), convergence traces per solver and training
loss per run (`deqbench.report.plot_curves`), and accuracy against eval NFE
(`deqbench.report.plot_evals`). A solve report gets its convergence traces. A plot without
data is skipped with a note; failed runs are left out of a plot and counted in its footer.
Runs are labelled by what varies between them (`deqbench.report.plot_labels`) and each keeps
one style across the plots (`deqbench.report.plot_style`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deqbench.errors import ConfigError
from deqbench.report.matching import load_report
from deqbench.report.plot_accuracy import accuracy_vs_time
from deqbench.report.plot_curves import convergence, loss
from deqbench.report.plot_evals import accuracy_vs_eval_nfe
from deqbench.report.plot_figure import Drawn, Source
from deqbench.report.plot_labels import run_labels
from deqbench.report.plot_memory import memory_vs_iterations

__all__ = ["PLOTS", "Drawn", "plot_report", "run_labels"]

PLOTS: list[Callable[[Source, Path], Drawn]] = [
    accuracy_vs_time,
    memory_vs_iterations,
    convergence,
    loss,
    accuracy_vs_eval_nfe,
]


def plot_report(report: str | Path, out: str | Path) -> list[Drawn]:
    """Draw every plot the report has data for into the folder ``out``."""
    report, out = Path(report), Path(out)
    source = Source(report, load_report(report))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    return [draw(source, out) for draw in PLOTS]
