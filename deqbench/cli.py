"""The ``deqbench`` command line: run, validate, list and compare."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deqbench.errors import DeqbenchError
from deqbench.hookspecs import KINDS
from deqbench.plugins import get_registry


class _Console(Console):
    """Rich output; tables keep a readable width when piped or captured (not a terminal)."""

    def __init__(self, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, soft_wrap=True)
        if not self.is_terminal:
            self.width = max(self.width, 160)


console = _Console()
err_console = _Console(stderr=True)


class _Group(click.Group):
    """Turns deqbench's own errors into one line on stderr and exit code 2, with no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeqbenchError as exc:
            # escaped: a message quoting "[anderson]" or "problems[0]" is not rich markup
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="deqbench")
def main() -> None:
    """Benchmark deep equilibrium models: solvers, gradient estimators, memory and speed."""


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


@main.command(name="list")
@click.argument("kind", required=False, type=click.Choice([*KINDS, "plugins"]))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Also each entry's details (e.g. a model's source)."
)
def list_(kind: str | None, as_json: bool, verbose: bool) -> None:
    """Everything the loaded plugins registered, and any plugin that failed to load."""
    registry = get_registry()
    if kind == "plugins":
        _list_plugins(registry, as_json)
        return
    kinds = KINDS if kind is None else (kind,)
    items = [
        {"kind": e.kind, "name": e.name, "plugin": e.plugin, "description": e.description}
        | ({"details": e.details} if verbose else {})
        for e in registry.entries(kinds)
    ]
    items += [
        {"kind": "plugin-error", "name": f.plugin, "plugin": f.plugin, "description": f.error}
        for f in registry.failures
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if kind is not None and not any(item["kind"] == kind for item in items):
        _nothing_registered(registry, kind)
        if not items:
            return
    table = Table("kind", "name", "plugin", "description", *(["details"] if verbose else []))
    for item in items:
        style = "red" if item["kind"] == "plugin-error" else None
        cells = [item["kind"], item["name"], item["plugin"], item["description"]]
        table.add_row(*cells, *([item.get("details", "")] if verbose else []), style=style)
    console.print(table)


@main.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    metavar="A:B",
    help="With one report: compare solver B against solver A, run by run.",
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
@click.option(
    "--factor",
    type=click.FloatRange(min=1.0),
    default=1.1,
    show_default=True,
    help="Mark a time, memory or NFE ratio B/A above this (a throughput below 1/this) as worse.",
)
@click.option(
    "--drop",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Mark an accuracy or mIoU drop of more than this many points as worse.",
)
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
    """Compare two reports run by run (B / A), or solver pairs A:B within one report."""
    from deqbench.errors import ConfigError
    from deqbench.report import compare_render
    from deqbench.report.compare import compare as compare_runs
    from deqbench.report.compare import compare_pairs, parse_pair
    from deqbench.report.matching import load_report, meta_differences

    frames = [load_report(path) for path in reports]
    if len(frames) == 2 and not pairs:
        names = (reports[0], reports[1])
        result = compare_runs(*frames, names=names, factor=factor, drop=drop, each_seed=each_seed)
        warnings = meta_differences(*reports)
    elif len(frames) == 1 and pairs:
        parsed = [parse_pair(p) for p in pairs]
        result = compare_pairs(
            frames[0], parsed, name=reports[0], factor=factor, drop=drop, each_seed=each_seed
        )
        warnings = []
    else:
        raise ConfigError("compare takes two reports, or one report with --pair A:B")
    if result.table.empty:
        a, b = result.names
        raise ConfigError(
            f"{a} and {b} have no runs in common ({len(result.only_a)} runs only in {a}, "
            f"{len(result.only_b)} only in {b}; matched on {', '.join(result.keys)})"
        )
    for line in [*warnings, *result.notes]:
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if fmt == "rich":
        for part in compare_render.to_rich(result):
            console.print(part)
    else:
        render = compare_render.to_markdown if fmt == "markdown" else compare_render.to_csv
        click.echo(render(result), nl=False)
    if out:
        out.write_text(compare_render.to_csv(result), encoding="utf-8")
        err_console.print(f"wrote {out}", highlight=False)
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
            console.print(f"skipped {drawn.name}: {drawn.note}", highlight=False)
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


def _nothing_registered(registry, kind: str) -> None:
    """Say why a kind's list is empty: which plugins failed to load, and where one comes from."""
    failed = [f.plugin for f in registry.failures]
    lines = [f"no {kind} are registered."]
    if failed:
        lines.append(f"These plugins failed to load (see below): {', '.join(failed)}.")
    lines.append(
        f"{kind.capitalize()} come from plugins: install a package that declares a 'deqbench' "
        f"entry point registering {kind} (deqbench's own plugins/ does, once installed with "
        "pip install -e .); `deqbench list plugins` shows what loaded."
    )
    err_console.print(" ".join(lines), highlight=False)


def _plural(count: int, kind: str) -> str:
    """'1 solver', '2 solvers' (kinds are named in the plural)."""
    return f"{count} {kind[:-1] if count == 1 and kind.endswith('s') else kind}"


def _list_plugins(registry, as_json: bool) -> None:
    failed = {f.plugin: f.error for f in registry.failures}
    rows = []
    for name in sorted(set(registry.versions) | set(failed)):
        counts: dict[str, int] = {}
        for entry in registry.entries():
            if entry.plugin == name:
                counts[entry.kind] = counts.get(entry.kind, 0) + 1
        rows.append(
            {
                "plugin": name,
                "version": registry.versions.get(name, ""),
                "registered": counts,
                "error": failed.get(name, ""),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("plugin", "version", "registered", "error")
    for row in rows:
        what = ", ".join(_plural(n, k) for k, n in row["registered"].items()) or "nothing"
        table.add_row(
            row["plugin"], row["version"], what, row["error"], style="red" if row["error"] else None
        )
    console.print(table)
