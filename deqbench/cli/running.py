"""``deqbench validate`` and ``deqbench run``: check a suite, run it."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from deqbench.cli.app import console, err_console, main

#: ``--set``, as validate and run take it
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key of the suite (repeatable), the value as TOML: --set recipe.lr=0.1; "
    'a matrix key is one dotted key, quoted: --set \'matrix."deq.solver"=["anderson"]\'.',
)


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@set_option
def validate(suite_file: Path, overrides: tuple[str, ...]) -> None:
    """Check a suite file (and overrides) without running anything."""
    from deqbench.suite.load import load_suite

    suite = load_suite(suite_file, overrides)
    for line in suite.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    n = len(suite.runs)
    console.print(f"{suite_file}: ok, suite {suite.name!r} expands to {n} run{'s' * (n != 1)}")


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Result CSV path.")
@set_option
@click.option("--device", help="cpu, cuda, cuda:N or auto (overrides suite.device).")
@click.option("--limit", type=click.IntRange(min=1), help="Smoke run: cap iterations at N.")
@click.option("--only", multiple=True, metavar="PROBLEM", help="Run only these problems.")
@click.option(
    "--max-steps", type=click.IntRange(min=1), help="Training smoke run: at most N steps per run."
)
@click.option(
    "--max-eval-batches",
    type=click.IntRange(min=1),
    help="Training smoke run: evaluate on at most N batches.",
)
@click.option(
    "--shard",
    metavar="I/N",
    help="Run only share I of N of the runs (run index % N = I-1); merge the shares' "
    "reports with deqbench merge.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="REPORT.csv",
    help="Continue this report: skip its finished runs, resume interrupted ones from their "
    "checkpoints, append the rest.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train each run on N processes with torch.distributed (one GPU each on CUDA, gloo on "
    "the CPU): shorthand for "
    "torchrun --standalone --nproc_per_node=N -m deqbench run ...",
)
@click.option(
    "--progress-every",
    type=click.IntRange(min=0),
    metavar="STEPS",
    help="Training suites, when output is not a terminal (a pipe, a Slurm log): a progress "
    "line every STEPS steps and at the last, besides one per interim evaluation and per "
    "finished run; 0: no step lines. Shorthand for --set logging.progress_every=STEPS "
    "(default 100).",
)
def run(
    suite_file: Path,
    out: Path | None,
    overrides: tuple[str, ...],
    device: str | None,
    limit: int | None,
    only: tuple[str, ...],
    max_steps: int | None,
    max_eval_batches: int | None,
    shard: str | None,
    resume: Path | None,
    nproc: int | None,
    progress_every: int | None,
) -> None:
    """Run a suite and write its report (CSV, traces and metadata)."""
    from deqbench.measure import openmp

    openmp.choose_wait_policy()  # before torch loads: passive waiting on a busy machine
    from deqbench.execution import distributed
    from deqbench.execution.plan import Request, plan_run, relaunch_code
    from deqbench.execution.runner import run_suite

    smoke = {"--limit": limit, "--only": only, "--max-steps": max_steps}
    smoke["--max-eval-batches"] = max_eval_batches
    if progress_every is not None:
        overrides = _progress_override(suite_file, overrides, progress_every)
    request = Request(suite_file, overrides, out, device, smoke, shard, resume, nproc)
    code = relaunch_code(request)
    if code is not None:
        sys.exit(code)
    if not distributed.from_env().is_main:  # one rank speaks for the job
        console.quiet = err_console.quiet = True
    plan = plan_run(request)
    for line in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    for line in plan.notes:
        console.print(line)
    dist, kind = plan.dist, plan.kind
    where = f"{plan.device}"
    if dist.enabled:
        where = f"{dist.world_size} ranks ({dist.backend}, {plan.device.type})"
    console.print(
        f"suite [bold]{plan.suite.name}[/]: {plan.todo} {kind.title} runs on {where} → {plan.out}"
    )
    try:
        with kind.display(console, plan.suite.name, plan.todo) as display:
            outcome = run_suite(
                plan.suite,
                plan.out,
                plan.device,
                on_row=display.run_finished,
                observer=display,
                meta=plan.meta,
                resume=plan.resume,
                dist=dist,
            )
    finally:
        distributed.shutdown()
    for part in kind.summary(outcome.rows):
        console.print(part)
    for line in kind.warnings(outcome.rows):
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    files = ", ".join(f".{suffix}" for suffix in (*kind.companions, "meta.json"))
    total = sum(row["wall_s"] for row in outcome.rows)
    console.print(f"wrote {plan.out} (+ {files}) in {total:.0f} s")
    if outcome.interrupted:
        sys.exit(130)
    if outcome.failed:
        err_console.print(f"[red]{outcome.failed} run(s) failed[/]; see the error column")
        sys.exit(distributed.exit_code(1, dist))


def _progress_override(suite_file: Path, overrides: tuple[str, ...], every: int) -> tuple[str, ...]:
    """``--progress-every`` as the ``--set`` it stands for; refused in one line for a kind of
    suite without the key (a solve suite prints a line per finished run)."""
    from deqbench.errors import ConfigError
    from deqbench.plugins import get_run_kind
    from deqbench.suite.load import load_suite

    kind = get_run_kind(load_suite(suite_file, overrides).kind)
    logging = getattr(kind.schema, "model_fields", {}).get("logging")
    if "progress_every" not in getattr(getattr(logging, "annotation", None), "model_fields", {}):
        raise ConfigError(
            f"{suite_file}: --progress-every applies to training suites; a {kind.title} suite "
            "prints a line per finished run"
        )
    return (*overrides, f"logging.progress_every={every}")
