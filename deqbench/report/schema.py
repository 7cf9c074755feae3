"""What a report row is: a run's status, the row type, and how a compared figure reads.

Each kind of run declares its own columns (`deqbench.runs.kind.RunKind.columns`); what every
kind shares lives here. A row is a plain mapping from column to value, as the CSV holds it;
`deqbench.report.results.ReportWriter` refuses a column its kind does not document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

#: The kind of run of a suite file, or a report's ``meta.json``, that names none: the format's
#: default, and what every report was before kinds were named.
DEFAULT_KIND = "solve"

#: One result row: column → value (numbers, text, or empty).
Row: TypeAlias = dict[str, Any]


class RunStatus(str, Enum):
    """How a run ended. A `str`, so a row's status compares, prints and writes as its value."""

    COMPLETED = "completed"  #: a training run that trained and evaluated
    CONVERGED = "converged"  #: a solve within tolerance
    MAX_ITER = "max_iter"  #: a solve that used its cap without reaching tolerance
    DIVERGED = "diverged"  #: non-finite iterates (solve) or loss (training)
    ERROR = "error"  #: an exception in the run
    OOM = "oom"  #: out of memory (CUDA, or the kernel's OOM killer)
    TIMEOUT = "timeout"  #: past ``[suite] timeout``
    CRASHED = "crashed"  #: the run's worker process died (a segfault, say)
    INTERRUPTED = "interrupted"  #: Ctrl-C: resuming the report runs it again

    def __str__(self) -> str:
        return self.value

    # As its text hashes: "oom" read back from a CSV is found in a set of statuses.
    __hash__ = str.__hash__


#: Statuses that are failed runs in every kind of suite: the suite exits with 1 when a row has
#: one. A kind may add its own (`deqbench.runs.kind.RunKind.failed`).
FAILED = frozenset(
    {RunStatus.OOM, RunStatus.ERROR, RunStatus.TIMEOUT, RunStatus.INTERRUPTED, RunStatus.CRASHED}
)


@dataclass(frozen=True)
class Metric:
    """One compared figure: a ratio B / A (costs) or a difference B − A in points (accuracy)."""

    name: str
    label: str
    points: bool = False  #: difference in points instead of a ratio
    higher_is_better: bool = False
    marked: bool = True  #: counts as a regression when it gets worse beyond the threshold


def undocumented(rows: list[Mapping[str, Any]], columns: Mapping[str, str]) -> set[str]:
    """The keys of ``rows`` that ``columns`` does not document."""
    return {key for row in rows for key in row} - set(columns)


def finite_number(value: Any) -> float | None:
    """A report cell as a finite float, or None (empty, text, NaN or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
