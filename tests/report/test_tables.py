"""The end-of-suite tables: smoke timings marked, options as ``k=v``, figures kept whole."""

from __future__ import annotations

import io

from rich.console import Console

from deqbench.report import tables
from deqbench.runs.train.kind import TRAIN_KEYS

SOLVE = {"problem": "tanh", "status": "converged", "nfe": 12, "converged_frac": 1.0}
SOLVE |= {"rel_residual_max": 0.00047, "solve_ms_median": 1390.2, "overhead_per_nfe": 1080.0}
SOLVE |= {"solver_mem_mb": 0.5, "noisy": ""}


def _text(table, width: int = 200) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width).print(table)
    return buffer.getvalue()


def _line(text: str, word: str) -> str:
    return next(line for line in text.splitlines() if f" {word} " in line)


def test_smoke_timings_are_marked_and_explained():
    rows = [
        SOLVE | {"solver": "anderson", "smoke": 3},
        SOLVE | {"solver": "broyden", "smoke": float("nan")},  # a full run, read back from a CSV
    ]
    text = _text(tables.results_table(rows))
    smoke, full = _line(text, "anderson"), _line(text, "broyden")
    assert "│ 1,390† " in smoke and "│ 1,080† " in smoke  # the times, not NFE or memory
    assert "│ 12 " in smoke and "│ 0.5 " in smoke and "0.00047 " in smoke
    assert "†" not in full and "│ 1,390 " in full and "│ 1,080 " in full
    assert "† a smoke run (--limit): timed from one unwarmed repeat" in text


def test_without_smoke_rows_nothing_is_marked():
    text = _text(tables.results_table([SOLVE | {"solver": "anderson", "smoke": ""}]))
    assert "†" not in text and "1.39e+03" not in text and "│ 1,390 " in text


def test_varying_options_read_as_pairs_and_none_as_nothing():
    rows = [
        SOLVE | {"solver": "anderson", "solver_options": '{"beta": 1.0, "m": 5}'},
        SOLVE | {"solver": "broyden", "solver_options": "{}"},
    ]
    text = _text(tables.results_table(rows))
    assert "│ beta=1.0, m=5 " in _line(text, "anderson")
    assert "{" not in text and "'" not in text


def test_the_training_table_shows_options_as_pairs_and_numbers_whole():
    base = {"model": "tiny-deq", "solver": "anderson", "status": "completed", "seed": 0}
    rows = [
        base | {"gradient": "ift", "options": '{"deq.gradient": "ift", "recipe.lr": 0.05}'},
        base | {"gradient": "jfb", "options": '{"deq.gradient": "jfb", "recipe.lr": 0.1}'},
    ]
    rows[0] |= {"f_rel_residual_median_final": 0.00047, "step_ms_median": 20000.0}
    rows[1] |= {"model_options": "{}", "step_ms_median": 1390.2, "saved_mb": 1536.0}
    text = _text(tables.train_table(rows, TRAIN_KEYS), width=80)
    assert "lr=0.05" in _line(text, "ift") and "lr=0.1" in _line(text, "jfb")
    ift, jfb = _line(text, "ift"), _line(text, "jfb")
    # three significant digits: 1536 MB reads 1,540
    assert "0.00047" in ift and "20,000" in ift and "1,390" in jfb and "1,540" in jfb
