"""Plot labels name what tells runs apart: the identity values that vary across the report,
option dicts opened into their entries (an empty dict says nothing), and for runs that would
still read alike, what differs between them in their ``options``."""

from __future__ import annotations

import json

import pandas as pd

from deqbench.report.plot_labels import configurations, run_labels
from deqbench.runs.train.columns import TRAIN_COLUMNS


def _row(run, **values):
    row = dict.fromkeys(TRAIN_COLUMNS)
    row.update(
        run=run,
        kind="train",
        model="mdeq-cifar-tiny",
        dataset="cifar10",
        image_size=32,
        batch_size=128,
        solver="anderson",
        solver_options="{}",
        gradient="ift",
        gradient_options="{}",
        f_max_iter=18,
        model_options="{}",
        options="{}",
        seed=0,
        status="completed",
    )
    row.update(values)
    return row


def _explicit(run, depth):
    options = {"variant": "cifar-tiny", "depth": depth}
    return _row(
        run,
        model="explicit-mdeq",
        solver=None,
        solver_options=None,
        gradient=None,
        gradient_options=None,
        f_max_iter=None,
        model_options=json.dumps(options),
        options=json.dumps({"model.name": "explicit-mdeq", "model.options": options}),
    )


def _labels(rows):
    return run_labels(pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)), "train")


def test_only_the_keys_that_vary_appear():
    labels = _labels(
        [
            _row(0, model="mdeq-cifar-tiny", solver="anderson"),
            _row(1, model="mdeq-cifar-large", solver="anderson"),
            _row(2, model="mdeq-cifar-large", solver="broyden", f_max_iter=30),
        ]
    )
    assert labels == {
        0: "run 0: mdeq-cifar-tiny anderson f_max_iter=18",
        1: "run 1: mdeq-cifar-large anderson f_max_iter=18",
        2: "run 2: mdeq-cifar-large broyden f_max_iter=30",
    }


def test_option_dicts_show_their_varying_entries_and_empty_dicts_nothing():
    rows = [_row(0), _row(1, gradient="unrolled"), _explicit(2, 6), _explicit(3, 24)]
    labels = _labels(rows)
    assert labels == {
        0: "run 0: mdeq-cifar-tiny ift",  # f_max_iter is 18 wherever it is set
        1: "run 1: mdeq-cifar-tiny unrolled",
        2: "run 2: explicit-mdeq depth=6",  # variant is cifar-tiny wherever it is set
        3: "run 3: explicit-mdeq depth=24",
    }
    assert not any("{" in text or "options" in text for text in labels.values())


def test_a_single_run_or_identical_runs_are_named_by_number():
    assert _labels([_row(4)]) == {4: "run 4"}
    assert _labels([_row(0), _row(1)]) == {0: "run 0", 1: "run 1"}


def test_runs_alike_in_their_keys_are_told_apart_by_their_options():
    rows = [
        _row(0, options=json.dumps({"recipe.lr": 0.1, "deq.gradient": "ift"})),
        _row(1, options=json.dumps({"recipe.lr": 0.01, "deq.gradient": "ift"})),
        _row(2, gradient="jfb", options=json.dumps({"recipe.lr": 0.1, "deq.gradient": "jfb"})),
    ]
    assert _labels(rows) == {
        0: "run 0: ift recipe.lr=0.1",
        1: "run 1: ift recipe.lr=0.01",
        2: "run 2: jfb",
    }


def test_configurations_join_runs_that_differ_only_along_the_line():
    rows = [
        _row(i, gradient=g, f_max_iter=k, seed=s)
        for i, (g, k, s) in enumerate(
            [("ift", 6, 0), ("ift", 12, 0), ("ift", 6, 1), ("unrolled", 6, 0), ("unrolled", 12, 0)]
        )
    ]
    rows += [_explicit(5, 6), _explicit(6, 24)]
    frame = pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))
    config, labels = configurations(frame, "train", ("f_max_iter", "seed"))
    assert config.tolist() == [0, 0, 0, 1, 1, 2, 3]
    assert labels == {
        0: "mdeq-cifar-tiny ift",
        1: "mdeq-cifar-tiny unrolled",
        2: "explicit-mdeq depth=6",
        3: "explicit-mdeq depth=24",
    }
