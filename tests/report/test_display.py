"""The live displays, on a terminal and without one, fed as the runner and the loop feed them."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from deqbench.report.display import ProgressDisplay, TrainDisplay, plain_line

ROW = {"run": 0, "model": "tiny-deq", "solver": "anderson", "gradient": "ift"}
ROW |= {"status": "completed", "eval_top1": 93.333, "step_ms_median": 1390.2, "train_s": 12.0}


def _feed(display: TrainDisplay) -> None:
    display.run_started(SimpleNamespace(label="tiny-deq gradient=ift"), 4)
    for step in range(4):
        snapshot = {"step": step, "loss": 0.5, "f_nfe": 7, "f_rel_residual": 0.00047}
        display.progress(snapshot | {"total": 4, "progress_every": 2, "images_per_s": 20000.0})
    display.run_finished(ROW)


def test_without_a_terminal_the_steps_and_the_run_are_plain_lines():
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    with TrainDisplay(console, "tiny", 1) as display:
        assert not display.live_mode
        _feed(display)
    lines = buffer.getvalue().splitlines()
    assert [line.split(", loss")[0] for line in lines[:2]] == [
        "run 1/1 tiny-deq gradient=ift: step 2/4",
        "run 1/1 tiny-deq gradient=ift: step 4/4",
    ]
    assert "NFE 7, res 0.00047, 20,000 img/s, ETA " in lines[0]
    assert lines[2] == (
        "run 1/1 tiny-deq completed solver=anderson grad=ift top1=93.3 step_ms=1,390 train_s=12"
    )
    assert len(lines) == 3


def test_on_a_terminal_the_last_frame_leaves_the_table_to_the_summary():
    # The summary prints the finished runs' table after the display: the live display's last
    # frame, left on the screen, must not hold it too.
    buffer = io.StringIO()
    console = Console(file=buffer, width=140, force_terminal=True)
    with TrainDisplay(console, "tiny", 1) as display:
        _feed(display)
        display._live.refresh()
        assert "step ms" in buffer.getvalue()  # the table, while the suite runs
    last = buffer.getvalue().rsplit("\x1b[2K", 1)[-1]  # after the last frame's line erasing
    assert "tiny" in last and "1/1" in last and "step ms" not in last


def test_a_solve_suite_without_a_terminal_prints_a_line_per_run():
    buffer = io.StringIO()
    row = {"run": 3, "problem": "tanh", "solver": "broyden", "gradient": "", "status": "converged"}
    row |= {"nfe": 12, "rel_residual_max": 1e-12, "solve_ms_median": 0.52, "smoke": 3}
    with ProgressDisplay(Console(file=buffer, width=200), "solvers", 2) as display:
        display.run_finished(row)
    assert buffer.getvalue().splitlines() == [
        "run 1/2 (#3) tanh converged solver=broyden NFE=12 rel_res=1e-12 solve_ms=0.52 "
        "(smoke: timed from one unwarmed repeat)"
    ]


def test_plain_line_numbers_the_run_among_those_run_here():
    row = {"run": 4, "status": "error", "error": "boom [x]"}
    assert plain_line(row, 9) == "run 5/9 error error=boom [x]"
    assert plain_line(row, 9, done=2) == "run 2/9 (#4) error error=boom [x]"
