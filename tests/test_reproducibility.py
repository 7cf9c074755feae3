"""Reproducibility: a suite run twice, each time in fresh processes (the CLI, and a worker per
run), gives bitwise equal figures on the CPU; timings and memory are the only columns that may
differ."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from deqbench.report.results import read_report

#: Columns that measure the machine rather than the computation.
MACHINE = {
    "wall_s",
    "train_s",
    "step_ms_median",
    "step_ms_iqr",
    "backward_ms_median",
    "images_per_s",
    "rss_peak_mb",
    "peak_mem_mb",
    "grad_check_s",
    "eval_s",
}

SUITE = """
[suite]
name = "repro"
kind = "train"
device = "cpu"
seed = 3
threads = 2

[dataset]
name = "blobs"
image_size = 8
batch_size = 6

[model]
name = "mdeq-cpu-small"
options = { dropout = 0.2 }

[deq]
f_max_iter = 6
b_max_iter = 6

[recipe]
lr = 0.01
steps = 6
unrolled_warmup_steps = 2

[eval]
max_batches = 2
grad_check_every = 3

[matrix]
"deq.solver" = ["anderson", "broyden"]

[[include]]
"model.name" = "tiny-deq"
"model.options" = { input_noise = 0.3 }
"""


def _run(suite: Path, out: Path) -> None:
    env = {**os.environ, "DEQBENCH_PLUGINS": "deqbench.testing.train_toys:TrainToys"}
    cmd = [sys.executable, "-m", "deqbench", "run", str(suite), "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _same(a: object, b: object) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def test_a_suite_run_twice_in_fresh_processes_gives_bitwise_equal_figures(tmp_path):
    suite = tmp_path / "repro.toml"
    suite.write_text(textwrap.dedent(SUITE))
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    _run(suite, first)
    _run(suite, second)
    step_clock = {"images_per_s", "backward_ms"}
    for name, skip in ((".csv", MACHINE), (".steps.csv", step_clock), (".traces.csv", ())):
        a = read_report(first.with_name("a" + name))
        b = read_report(second.with_name("b" + name))
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
        for column in a.columns:
            if column in skip:
                continue
            for i, (x, y) in enumerate(zip(a[column], b[column], strict=True)):
                assert _same(x, y), f"{name} row {i} column {column}: {x!r} != {y!r}"
    rows = read_report(first)
    assert rows["status"].tolist() == ["completed"] * 3
    assert rows["grad_checks"].tolist()[:2] == [2, 2]  # steps 2 and 5 (the last)
