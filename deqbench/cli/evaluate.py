"""``deqbench eval``: evaluate given weights with a training suite's settings, without training.

It is ``deqbench run`` with the weights as ``[model] weights`` and no training length, so the
runs, their rows and their companion files are a training suite's (`deqbench.runs.train.weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from deqbench.cli.app import main
from deqbench.cli.running import run

#: What makes a training suite's runs evaluate only: no training length (0 is none).
EVAL_ONLY = ("recipe.epochs=0", "recipe.steps=0")


def eval_overrides(weights: Path, overrides: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``overrides``, then the ``--set`` items that start every run from ``weights`` and train
    none (after the user's, so that they win)."""
    quoted = json.dumps(str(weights), ensure_ascii=False)  # a TOML basic string
    return (*overrides, f"model.weights={quoted}", *EVAL_ONLY)


@main.command("eval")
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("weights", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Result CSV path.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key of the suite (repeatable), the value as TOML, e.g. --set "
    "eval.f_max_iter=30 or --set model.weights_format=mdeq-reference.",
)
@click.option("--device", help="cpu, cuda, cuda:N or auto (overrides suite.device).")
@click.option(
    "--max-eval-batches",
    type=click.IntRange(min=1),
    help="Smoke run: evaluate on at most N batches.",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    suite_file: Path,
    weights: Path,
    out: Path | None,
    overrides: tuple[str, ...],
    device: str | None,
    max_eval_batches: int | None,
) -> None:
    """Evaluate WEIGHTS (a deqbench checkpoint, a state dict or a layout the model reads, such
    as the reference MDEQ's) with SUITE_FILE's dataset, model, [deq] and [eval] settings
    ([eval] sweep, path independence, targets): one report row per run, no training."""
    from deqbench.errors import ConfigError
    from deqbench.measure import openmp

    openmp.choose_wait_policy()  # before torch loads, as `deqbench run` does
    from deqbench.suite.load import load_suite

    # The kind first: a solve suite would only say that it has no [model] weights. A matrix or
    # an include that sets a training length is refused by the suite's own validation.
    kind = load_suite(suite_file, overrides).kind
    if kind != "train":
        raise ConfigError(
            f"{suite_file}: suite.kind: deqbench eval takes a training suite "
            f'(kind = "train"), not {kind!r}'
        )
    ctx.invoke(
        run,
        suite_file=suite_file,
        out=out,
        overrides=eval_overrides(weights, overrides),
        device=device,
        max_eval_batches=max_eval_batches,
    )
