"""``deqbench validate`` and ``deqbench run``: check a suite, run it."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from deqbench.cli.app import console, err_console, main


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
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
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
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
    help="Train each run on N processes (GPUs) with torch.distributed: shorthand for "
    "torchrun --standalone --nproc_per_node=N -m deqbench run ...",
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
) -> None:
    """Run a suite and write its report (CSV, traces and metadata)."""
    from deqbench.measure import openmp

    openmp.choose_wait_policy()  # before torch loads: passive waiting on a busy machine
    from deqbench.execution import distributed
    from deqbench.execution.plan import Request, plan_run, relaunch_code
    from deqbench.execution.runner import run_suite

    smoke = {"--limit": limit, "--only": only, "--max-steps": max_steps}
    smoke["--max-eval-batches"] = max_eval_batches
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
