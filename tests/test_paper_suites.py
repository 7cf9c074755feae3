"""The shipped training suites validate and run end to end as smoke runs through the CLI, each on
a generated fixture in its dataset's real on-disk format; and ``[logging] tensorboard``.

The smoke runs keep each suite's real model names, solvers and gradient estimators, and shrink
only what costs CPU: batch 2, small images, 2 steps, 1 eval batch, and (for the heavy variants)
2 solver iterations and a narrower matrix.
"""

from __future__ import annotations

import importlib.util
import json
import math
import textwrap
from pathlib import Path

import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.report import tensorboard as logging_tb
from deqbench.report.results import read_report
from deqbench.testing import datasets as fixtures
from deqbench.testing.train_toys import TrainToys

SUITES = Path(__file__).resolve().parent.parent / "suites"
SMOKE = ["--max-steps", "2", "--max-eval-batches", "1", "--device", "cpu"]
SMALL = [
    "suite.threads=1",
    "dataset.batch_size=2",
    "dataset.eval_batch_size=2",
    "dataset.workers=0",
]
FEW_ITERS = ["deq.f_max_iter=2", "deq.b_max_iter=2"]

#: suite → (fixture writer or None, --set overrides, the models of its runs, its eval metric)
CASES = {
    "imagenet": (
        lambda root: fixtures.make_imagenet_folder(root, classes=3, per_class=2, size=(40, 40)),
        [
            *SMALL,
            *FEW_ITERS,
            "dataset.image_size=32",
            'matrix."deq.solver"=["anderson"]',
            'include=[{ "model.name" = "resnet50", "reference.top1" = 75.1 }]',
        ],
        ["mdeq-imagenet-small", "resnet50"],
        "eval_top1",
    ),
    "cifar10": (
        lambda root: fixtures.make_cifar10(root, n=4),
        [*SMALL, *FEW_ITERS],
        ["mdeq-cifar-tiny", "mdeq-cifar-large"],
        "eval_top1",
    ),
    "backward": (
        lambda root: fixtures.make_cifar10(root, n=4),
        [*SMALL, *FEW_ITERS, "model.name=mdeq-cifar-tiny"],
        ["mdeq-cifar-tiny"] * 5,
        "eval_top1",
    ),
    "cityscapes": (
        lambda root: fixtures.make_cityscapes(root, n=2, size=(32, 64)),
        [*SMALL, *FEW_ITERS, "dataset.options.crop_size=[16, 32]"],
        ["mdeq-cityscapes-small"],
        "eval_miou",
    ),
    "train-memory": (
        None,
        [
            *SMALL,
            "dataset.options.length=8",
            "dataset.options.eval_length=2",
            'matrix."deq.f_max_iter"=[2]',
            'matrix."dataset.image_size"=[32]',
        ],
        ["mdeq-cifar-tiny"] * 2 + ["explicit-mdeq"] * 2 + ["resnet18"],
        "eval_top1",
    ),
    "digits": (
        None,
        [
            *SMALL,
            *FEW_ITERS,
            'matrix."deq.solver"=["broyden"]',
            'matrix."deq.gradient"=["phantom"]',
        ],
        ["mdeq-cpu-small", "explicit-mdeq", "resnet18"],
        "eval_top1",
    ),
}


#: The published figure of each smoke run of a paper suite (docs/reference-results.md).
FIGURES = {
    "imagenet": [75.4, 75.1],
    "cifar10": [87.1, 93.6],
    "backward": [93.6, 93.14, None, None, None],
    "cityscapes": [75.1],
}


@pytest.mark.parametrize("name", list(CASES))
def test_shipped_suite_validates(name, cli):
    result = cli.invoke(main, ["validate", str(SUITES / f"{name}.toml")])
    assert result.exit_code == 0, result.output
    assert f"suite '{name}' expands to" in result.output


@pytest.mark.parametrize("name", list(CASES))
def test_shipped_suite_smoke_runs(name, cli, tmp_path):
    make, overrides, models, metric = CASES[name]
    if make is not None:
        make(tmp_path / "data")
        overrides = [*overrides, f"dataset.root={tmp_path / 'data'}"]
    out = tmp_path / f"{name}.csv"
    args = ["run", str(SUITES / f"{name}.toml"), *SMOKE, "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    result = cli.invoke(main, args)
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    assert frame["model"].tolist() == models  # one row per run, in the suite's order
    assert frame["status"].tolist() == ["completed"] * len(models), frame["error"].tolist()
    assert (frame["steps_done"] == 2).all()
    assert frame[metric].map(math.isfinite).all() and frame["eval_loss"].map(math.isfinite).all()
    assert frame[metric].between(0, 100).all()
    assert (frame["saved_mb"] > 0).all()  # every run meters one step's saved activations
    deq = frame[frame["model"].str.startswith("mdeq-")]
    # the smoke run caps the warm-up at one step, so every DEQ also trains in equilibrium mode
    assert (deq["equilibrium_steps"] >= 1).all() and deq["f_nfe_mean"].notna().all()
    # each row carries its published figure ([reference]) and a verdict judged on it
    figures = [None if math.isnan(v) else v for v in frame["reference_value"]]
    assert figures == FIGURES.get(name, [None] * len(models))
    verdicts = [("n/a",) if v is None else ("yes", "no") for v in figures]
    assert all(r in ok for r, ok in zip(frame["reproduced"], verdicts, strict=True))


#: Each paper suite's runs: (gradient or model, published figure, band) in run order.
PUBLISHED = {
    "imagenet": [("ift", ("top1", 75.4), 1.0)] * 2
    + [(g, None, 1.0) for g in ("phantom", "phantom", "jfb", "jfb")]
    + [("resnet50", ("top1", 75.1), 1.0)],
    "cifar10": [("ift", ("top1", 87.1), 0.8), ("ift", ("top1", 93.6), 0.4)],
    "cityscapes": [("ift", ("miou", 75.1), 1.0)],
    "backward": [("ift", ("top1", 93.6), 0.4), ("shine", ("top1", 93.14), 1.0)]
    + [(g, None, 0.4) for g in ("jfb", "refine", "refine")],
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_paper_suites_hold_their_published_figures(name):
    """The figures of each suite's header, as mdeq.md has them, per run; bands from the
    published spread (twice the ±) or the default of 1 point."""
    from deqbench.suite.load import load_suite

    plugins.reset_registry()
    runs = load_suite(SUITES / f"{name}.toml").runs
    got = [
        (
            r.spec.deq.gradient if r.spec.model.name.startswith("mdeq") else r.spec.model.name,
            r.spec.reference.figure(),
            r.spec.reference.band,
        )
        for r in runs
    ]
    assert got == PUBLISHED[name]
    assert all(r.spec.reference.source for r in runs)
    assert not any(k.startswith("reference.") for r in runs for k in r.options)


def test_train_memory_sweeps_ift_against_unrolled():
    """The memory suite's matrix is what its header promises: both backward modes at every
    iteration count and image size, plus the explicit baselines."""
    from deqbench.suite.load import load_suite

    suite = load_suite(SUITES / "train-memory.toml")
    deq = [r for r in suite.runs if r.spec.model.name == "mdeq-cifar-tiny"]
    grid = {(r.spec.deq.gradient, r.spec.deq.f_max_iter, r.spec.dataset.image_size) for r in deq}
    assert grid == {(g, n, s) for g in ("ift", "unrolled") for n in (6, 12, 24) for s in (32, 64)}
    depths = sorted(
        r.spec.model.options["depth"] for r in suite.runs if "depth" in r.spec.model.options
    )
    assert depths == [6, 24]


# -- [logging] tensorboard ------------------------------------------------------------------------
TOY = """
[suite]
name = "tb"
kind = "train"
device = "cpu"

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[deq]
f_max_iter = 6

[recipe]
optimizer = "sgd"
lr = 0.05
steps = 3
unrolled_warmup_steps = 1

[eval]
every_epochs = 0

[logging]
tensorboard = true

[matrix]
"deq.gradient" = ["ift", "jfb"]
"""


@pytest.fixture
def toys(tmp_path):
    plugins.reset_registry(("train-toys", TrainToys()))
    path = tmp_path / "tb.toml"
    path.write_text(textwrap.dedent(TOY))
    yield path
    plugins.reset_registry()


def test_tensorboard_missing_fails_at_validation(toys, cli, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    result = cli.invoke(main, ["validate", str(toys)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    # `tensorboard = true` is the deprecated spelling of loggers = ["tensorboard"]
    need = f"{toys}: logging.tensorboard: logger 'tensorboard' needs the tensorboard package"
    assert need in result.output and "pip install tensorboard" in result.output
    run = cli.invoke(main, ["run", str(toys), "--out", str(toys.with_suffix(".csv"))])
    assert run.exit_code == 2 and not toys.with_suffix(".csv").exists()  # nothing started
    off = cli.invoke(main, ["validate", str(toys), "--set", "logging.tensorboard=false"])
    assert off.exit_code == 0, off.output


class FakeWriter:
    def __init__(self, folder: str) -> None:
        self.folder, self.scalars, self.closed = folder, [], 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed += 1


def test_tensorboard_logs_each_run_steps_and_eval(toys, cli, monkeypatch, tmp_path):
    writers: list[FakeWriter] = []
    monkeypatch.setattr(logging_tb, "tensorboard_available", lambda: True)
    monkeypatch.setattr(
        logging_tb, "_summary_writer", lambda f: writers.append(FakeWriter(f)) or writers[-1]
    )
    out = tmp_path / "rep" / "tb.csv"
    args = ["run", str(toys), "--out", str(out), "--max-eval-batches", "1"]
    # In the suite's process, where the fake writer is patched in (a worker would not see it).
    result = cli.invoke(main, [*args, "--set", "suite.isolate=false"])
    assert result.exit_code == 0, result.output
    frame = read_report(out)
    steps = read_report(out.with_name("tb.steps.csv"))
    root = tmp_path / "rep" / "tb.tensorboard"
    assert [Path(w.folder) for w in writers] == [
        root / "run-000-tiny-deq-gradient-ift",
        root / "run-001-tiny-deq-gradient-jfb",
    ]
    assert all(Path(w.folder).is_dir() for w in writers) and [w.closed for w in writers] == [1, 1]
    for index, writer in enumerate(writers):
        logged = {(tag, step): value for tag, value, step in writer.scalars}
        mine = steps[steps["run"] == index]
        assert [logged[("train/loss", s)] for s in mine["step"]] == pytest.approx(
            mine["loss"].tolist()
        )
        assert [logged[("train/lr", s)] for s in mine["step"]] == pytest.approx(mine["lr"].tolist())
        # NFE and residual only for the equilibrium steps (step 0 is the unrolled warm-up)
        assert ("train/f_nfe", 0) not in logged
        eq = mine[mine["mode"] == "equilibrium"]
        assert [logged[("train/f_nfe", s)] for s in eq["step"]] == eq["f_nfe"].tolist()
        row = frame.iloc[index]
        assert logged[("eval/top1", 3)] == pytest.approx(row["eval_top1"])
        assert logged[("eval/loss", 3)] == pytest.approx(row["eval_loss"])
    assert ("train/b_nfe", 2) in {(t, s) for t, _, s in writers[0].scalars}  # ift: a backward
    assert "train/b_nfe" not in {t for t, _, _ in writers[1].scalars}  # jfb: none
    assert json.loads(out.with_name("tb.meta.json").read_text())["runs"] == 2
