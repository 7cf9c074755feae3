"""A smoke run for logger plugins (docs/loggers.md): a suite that trains ``tiny-deq`` on the
digits at 8×8 with the loggers you name, and the report it wrote, to compare with what your
logger recorded::

    plugins.reset_registry(("train-toys", TrainToys()))
    suite = smoke_suite(tmp_path, ["my-logger"], {"my-logger": {"folder": str(tmp_path)}})
    # deqbench run SUITE --out tmp_path/r.csv --max-steps 3
    row, steps = smoke_report(tmp_path / "r.csv")

The runs train in the suite's process (``isolate = false``), where the in-process plugins are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deqbench.report.results import read_report

SUITE = """\
[suite]
name = "{name}"
kind = "train"
device = "cpu"
threads = 1
isolate = false
checkpoint = false

[dataset]
name = "digits"
image_size = 8
batch_size = 16
eval_batch_size = 64

[model]
name = "tiny-deq"

[deq]
f_max_iter = 6

[recipe]
optimizer = "sgd"
lr = 0.05
steps = 100  # --max-steps caps it

[eval]
every_epochs = 0
max_batches = 1
grad_check = false

[logging]
loggers = {loggers}
"""


def smoke_suite(
    folder: str | Path,
    loggers: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "logged",
) -> Path:
    """Write ``<folder>/<name>.toml``: the smoke suite with ``loggers`` and each one's
    ``options`` (strings, numbers, booleans and lists of them). Needs ``tiny-deq``
    registered in-process (`deqbench.testing.train_toys.TrainToys`)."""
    text = SUITE.format(name=name, loggers=json.dumps(list(loggers)))
    for logger, table in (options or {}).items():
        # JSON's strings, numbers, booleans and arrays are TOML's too
        text += f"\n[logging.options.{json.dumps(logger)}]\n"
        text += "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in table.items())
    path = Path(folder) / f"{name}.toml"
    path.write_text(text)
    return path


def smoke_report(report: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The smoke run's report row and its step rows (``<report>.steps.csv``), as written."""
    report = Path(report)
    (row,) = read_report(report).to_dict("records")
    steps = read_report(report.with_name(report.stem + ".steps.csv"))
    return row, steps.to_dict("records")
