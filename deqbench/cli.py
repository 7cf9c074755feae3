"""The ``deqbench`` command line: run, validate, list and compare."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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
    from deqbench.suite import load_suite

    suite = load_suite(suite_file, overrides)
    console.print(f"{suite_file}: ok, suite {suite.name!r} expands to {len(suite.runs)} runs")


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Result CSV path.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
@click.option("--device", help="cpu, cuda, cuda:N or auto (overrides suite.device).")
@click.option("--limit", type=click.IntRange(min=1), help="Smoke run: cap iterations at N.")
@click.option("--only", multiple=True, metavar="PROBLEM", help="Run only these problems.")
def run(
    suite_file: Path,
    out: Path | None,
    overrides: tuple[str, ...],
    device: str | None,
    limit: int | None,
    only: tuple[str, ...],
) -> None:
    """Run a suite and write its report (CSV, traces and metadata)."""
    from deqbench.runner import resolve_device, run_suite
    from deqbench.suite import load_suite, select, smoke

    suite = load_suite(suite_file, overrides)
    if only:
        suite = select(suite, only)
    if limit:
        suite = smoke(suite, limit)
    dev = resolve_device(device or suite.spec.suite.device)
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("reports") / f"{suite.name}-{stamp}.csv"
    console.print(f"suite [bold]{suite.name}[/]: {len(suite.runs)} runs on {dev} → {out}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(suite.name, total=len(suite.runs))
        outcome = run_suite(suite, out, dev, on_row=lambda row: bar.advance(task))
    console.print(results_table(outcome.rows))
    console.print(f"wrote {out} (+ .traces.csv, .meta.json)")
    if outcome.interrupted:
        sys.exit(130)
    if outcome.failed:
        err_console.print(f"[red]{outcome.failed} run(s) failed[/]; see the error column")
        sys.exit(1)


# Run-defining columns, shown only when they differ between rows.
_SETTINGS = {
    "solver_options": "options",
    "max_iter": "max iter",
    "tol": "tol",
    "stop_mode": "stop",
    "gradient_options": "grad options",
}
_SOLVE = {
    "nfe": "NFE",
    "converged_frac": "conv.",
    "rel_residual_max": "rel res max",
    "solve_ms_median": "solve ms",
    "overhead_per_nfe": "×bare/NFE",
    "solver_mem_mb": "solver MB",
    "spectral_radius_median": "ρ(J)",
}
_GRADIENT = {
    "nfe": "NFE",
    "rel_residual_max": "rel res max",
    "forward_ms_median": "fwd ms",
    "backward_ms_median": "bwd ms",
    "b_nfe": "b NFE",
    "b_status": "b status",
    "grad_cosine": "grad cos",
    "grad_rel_error": "grad rel err",
    "saved_mb": "saved MB",
    "peak_mem_mb": "CUDA peak MB",
}


def _cell(value: object) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    if isinstance(value, str) and value.startswith("{"):  # options, stored as JSON
        return " ".join(f"{k}={v}" for k, v in json.loads(value).items())
    return str(value)


def results_table(rows: list[dict]) -> Table:
    """A rich table of the columns a reader scans first; the CSV has them all."""
    gradients = any(_cell(r.get("gradient")) not in ("–", "") for r in rows)
    varying = {k: v for k, v in _SETTINGS.items() if len({_cell(r.get(k)) for r in rows}) > 1}
    columns = {
        "problem": "problem",
        "solver": "solver",
        **({"gradient": "gradient"} if gradients else {}),
        **varying,
        "status": "status",
        **(_GRADIENT if gradients else _SOLVE),
    }
    shown = {k: v for k, v in columns.items() if any(_cell(r.get(k)) != "–" for r in rows)}
    table = Table()
    for title in shown.values():
        table.add_column(title, overflow="fold")
    colour = {"converged": None, "max_iter": "yellow"}
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in shown), style=colour.get(row["status"], "red"))
    return table


@main.command(name="list")
@click.argument("kind", required=False, type=click.Choice([*KINDS, "plugins"]))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_(kind: str | None, as_json: bool) -> None:
    """Everything the loaded plugins registered, and any plugin that failed to load."""
    registry = get_registry()
    if kind == "plugins":
        _list_plugins(registry, as_json)
        return
    kinds = KINDS if kind is None else (kind,)
    items = [
        {"kind": e.kind, "name": e.name, "plugin": e.plugin, "description": e.description}
        for e in registry.entries(kinds)
    ]
    items += [
        {"kind": "plugin-error", "name": f.plugin, "plugin": f.plugin, "description": f.error}
        for f in registry.failures
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = Table("kind", "name", "plugin", "description")
    for item in items:
        style = "red" if item["kind"] == "plugin-error" else None
        table.add_row(item["kind"], item["name"], item["plugin"], item["description"], style=style)
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
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write ratios CSV.")
def compare(reports: tuple[str, ...], pairs: tuple[str, ...], out: Path | None) -> None:
    """Compare two reports (B / A per run), or solver pairs within one report."""
    from deqbench.compare import compare_reports, compare_solvers, parse_pair
    from deqbench.errors import ConfigError
    from deqbench.results import read_report

    frames = [read_report(path) for path in reports]
    if len(frames) == 2 and not pairs:
        table = compare_reports(*frames)
    elif len(frames) == 1 and pairs:
        table = compare_solvers(frames[0], [parse_pair(p) for p in pairs])
    else:
        raise ConfigError("compare takes two reports, or one report with --pair A:B")
    if table.empty:
        raise ConfigError("the reports have no runs in common")
    ratio_cols = [c for c in table.columns if c.endswith("_ratio")]
    shown = Table("problem", "solver", *(c.removesuffix("_ratio") + " b/a" for c in ratio_cols))
    for _, row in table.iterrows():
        shown.add_row(str(row["problem"]), str(row["solver"]), *(_cell(row[c]) for c in ratio_cols))
    console.print(shown)
    if out:
        table.to_csv(out, index=False)
        console.print(f"wrote {out}")


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
        what = ", ".join(f"{n} {k}" for k, n in row["registered"].items()) or "nothing"
        table.add_row(
            row["plugin"], row["version"], what, row["error"], style="red" if row["error"] else None
        )
    console.print(table)
