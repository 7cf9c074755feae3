"""``deqbench compare``, ``plot`` and ``merge``: read reports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape

from deqbench.cli.app import console, err_console, main


def mark_options(when: str = "") -> Callable[[Callable], Callable]:
    """``--factor`` and ``--drop``, what compare marks as worse (``when``: a help prefix, as
    "with --compare, ")."""

    def text(rest: str) -> str:
        words = when + rest
        return words[0].upper() + words[1:]

    factor = click.option(
        "--factor",
        type=click.FloatRange(min=1.0),
        default=1.1,
        show_default=True,
        help=text(
            "mark a time, memory or NFE ratio B/A above this (a throughput below 1/this) as worse."
        ),
    )
    drop = click.option(
        "--drop",
        type=click.FloatRange(min=0.0),
        default=1.0,
        show_default=True,
        help=text("mark an accuracy or mIoU drop of more than this many points as worse."),
    )
    return lambda command: factor(drop(command))


@main.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    metavar="[KEY=]A:B",
    help="With one report: compare the runs with KEY=B against those with KEY=A, matched on "
    "every other key; figures read B / A (B − A for accuracy). KEY: any run key (model, "
    "gradient, solver, f_tol, …), COLUMN.ENTRY of a JSON column (solver_options.m) or a swept "
    "option (recipe.lr); plain A:B pairs solvers. E.g. --pair gradient=ift:jfb shows jfb / ift.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the CSV here."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rich", "markdown", "csv"]),
    default="rich",
    show_default=True,
    help="Output: a table, a markdown table (for a PR), or CSV on stdout.",
)
@mark_options()
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help="Exit 1 when any run got worse or newly failed (an accuracy difference within noise, "
    "marked ≈, never counts).",
)
@click.option(
    "--each-seed",
    is_flag=True,
    help="Training reports with seed repeats: match runs seed by seed instead of comparing "
    "each configuration's seed mean.",
)
def compare(
    reports: tuple[str, ...],
    pairs: tuple[str, ...],
    out: Path | None,
    fmt: str,
    factor: float,
    drop: float,
    fail_on_regression: bool,
    each_seed: bool,
) -> None:
    """Compare two reports run by run (B / A: the second against the first), or pairs
    KEY=A:B within one report (B / A: the runs with KEY=B against those with KEY=A)."""
    from deqbench.errors import ConfigError
    from deqbench.report import compare_render
    from deqbench.report.compare import compare as compare_runs
    from deqbench.report.compare import compare_pairs
    from deqbench.report.matching import load_report, meta_differences
    from deqbench.report.pairs import parse_pair

    frames = [load_report(path) for path in reports]
    if len(frames) == 2 and not pairs:
        names = (reports[0], reports[1])
        result = compare_runs(*frames, names=names, factor=factor, drop=drop, each_seed=each_seed)
        warnings = meta_differences(*reports)
    elif len(frames) == 1 and pairs:
        parsed = [parse_pair(p) for p in pairs]
        keys = sorted({key for key, _, _ in parsed})
        if len(keys) > 1:
            raise ConfigError(f"--pair: one key per compare, got {', '.join(keys)}")
        result = compare_pairs(
            frames[0],
            [(a, b) for _, a, b in parsed],
            name=reports[0],
            factor=factor,
            drop=drop,
            each_seed=each_seed,
            key=keys[0],
        )
        warnings = []
    else:
        raise ConfigError("compare takes two reports, or one report with --pair A:B")
    if result.table.empty:
        a, b = result.names
        matched = [k for k in result.keys if k != result.pair]  # the pair's own key differs
        raise ConfigError(
            f"{a} and {b} have no runs in common ({len(result.only_a)} runs only in {a}, "
            f"{len(result.only_b)} only in {b}; matched on {', '.join(matched)})"
        )
    for line in [*warnings, *result.notes]:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    if fmt == "rich":
        for part in compare_render.to_rich(result):
            console.print(part)
    else:
        render = compare_render.to_markdown if fmt == "markdown" else compare_render.to_csv
        click.echo(render(result), nl=False)
    if out:
        out.write_text(compare_render.to_csv(result), encoding="utf-8")
        err_console.print(f"wrote {out}", highlight=False)
    if fail_on_regression and result.noisy:
        err_console.print(
            f"--fail-on-regression ignores {result.noisy} noisy figure(s) (marked !)",
            highlight=False,
        )
    if fail_on_regression and result.regressions:
        err_console.print(f"[red]{result.regressions} run(s) got worse[/]", highlight=False)
        sys.exit(1)


@main.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the PNGs (default: REPORT-plots/ beside the report).",
)
def plot(report: Path, out_dir: Path | None) -> None:
    """Draw a report as PNGs: accuracy, memory, convergence traces, training loss, accuracy
    against evaluation NFE ([eval] sweep)."""
    from deqbench.report.plot import plot_report

    out_dir = out_dir or report.with_name(report.stem + "-plots")
    for drawn in plot_report(report, out_dir):
        if drawn.path is None:
            console.print(f"skipped {drawn.name}: {escape(drawn.note)}", highlight=False)
        else:
            console.print(f"wrote {drawn.path} ({drawn.runs} runs)", highlight=False)


@main.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Merged CSV."
)
@click.option("--strict", is_flag=True, help="Missing runs are an error (exit 2), not a warning.")
def merge(reports: tuple[Path, ...], out: Path, strict: bool) -> None:
    """Merge the shares of one suite (deqbench run --shard I/N) into one report."""
    from deqbench.report.merge import merge_reports

    merged = merge_reports(reports, out, strict=strict)
    for line in merged.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    extra = "".join(f" + .{c}" for c in merged.companions)
    console.print(
        f"merged {merged.shares} share(s) of suite {merged.suite!r}: {merged.rows} runs → "
        f"{merged.path} (+ .meta.json{extra})",
        highlight=False,
    )
