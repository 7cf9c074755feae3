"""Plain progress lines (output that is not a terminal), on a clock the test moves."""

from __future__ import annotations

import io

from rich.console import Console

from deqbench.report.progress import StepLines, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(clock: Clock) -> tuple[StepLines, io.StringIO]:
    buffer = io.StringIO()
    return StepLines(Console(file=buffer, width=200), clock=clock), buffer


def _step(step: int, every: int = 4, total: int = 10, **fields) -> dict:
    snapshot = {"step": step, "loss": 0.6931, "total": total, "progress_every": every}
    return snapshot | fields


def test_duration():
    assert duration(3725.4) == "1:02:05" and duration(0.2) == "0:00:00" and duration(None) == "–"


def test_a_line_every_n_steps_and_at_the_last_with_the_eta_from_the_run_s_pace():
    clock = Clock()
    lines, buffer = _lines(clock)
    lines.start("run 2/9 tiny-deq gradient=jfb", 10)
    clock.now += 8.0
    # steps 1-4 in 8 s: 2 s a step, 6 steps left
    lines.step(_step(3, f_nfe=12, f_rel_residual=0.00047, images_per_s=20000.0))
    clock.now += 1.0
    lines.step(_step(4))  # step 5: not on the cadence, no line
    clock.now += 3.0
    lines.step(_step(7))  # steps 5-8 in 4 s from the first line's: 1 s a step, 2 left
    clock.now += 2.0
    lines.step(_step(9))  # the last step
    assert buffer.getvalue().splitlines() == [
        "run 2/9 tiny-deq gradient=jfb: step 4/10, loss 0.693, NFE 12, res 0.00047, "
        "20,000 img/s, ETA 0:00:12",
        "run 2/9 tiny-deq gradient=jfb: step 8/10, loss 0.693, ETA 0:00:02",
        "run 2/9 tiny-deq gradient=jfb: step 10/10, loss 0.693, ETA 0:00:00",
    ]


def test_every_zero_prints_only_the_evaluations():
    clock = Clock()
    lines, buffer = _lines(clock)
    lines.start("run 1/1 m", 10)
    for step in (3, 7):
        lines.step(_step(step, every=0))
    lines.evaluation(
        {"eval": {"eval_top1": 93.333, "eval_loss": 0.25, "eval_nfe_mean": 11.5}, "epoch": 2}
        | {"step": 8}
    )
    lines.step(_step(9, every=0))  # the last step is a step line too: none with 0
    assert buffer.getvalue().splitlines() == [
        "run 1/1 m: eval after epoch 2 (step 8): top-1 93.3 %, loss 0.25, NFE 11.5"
    ]


def test_a_resumed_run_counts_its_pace_from_its_first_snapshot():
    clock = Clock()
    lines, buffer = _lines(clock)
    lines.start("r", 1000)
    clock.now += 10.0
    lines.step(_step(600, every=100, total=1000))  # resumed at 600: not 601 steps in 10 s
    clock.now += 99.0
    lines.step(_step(699, every=100, total=1000))  # 99 steps in 99 s: 300 s left
    assert buffer.getvalue().splitlines()[-1] == "r: step 700/1,000, loss 0.693, ETA 0:05:00"


def test_a_label_with_brackets_is_not_markup():
    lines, buffer = _lines(Clock())
    lines.start("run 1/1 [bold]x[/]", 2)
    lines.step(_step(1, total=2))
    assert buffer.getvalue().startswith("run 1/1 [bold]x[/]: step 2/2")
