"""The ``deqbench`` command line: run, validate, list and compare."""

from __future__ import annotations

import json
import sys
from datetime import datetime
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
    from deqbench.suite import load_suite

    suite = load_suite(suite_file, overrides)
    _warn(suite)
    n = len(suite.runs)
    console.print(f"{suite_file}: ok, suite {suite.name!r} expands to {n} run{'s' * (n != 1)}")


def _warn(suite) -> None:
    for line in getattr(suite, "warnings", ()):
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False)


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deqbench import openmp

    openmp.choose_wait_policy()  # before torch loads: passive waiting on a busy machine
    from deqbench import distributed
    from deqbench.errors import ConfigError
    from deqbench.results import check_out
    from deqbench.resume import plan_resume, suite_record
    from deqbench.runner import resolve_device, run_suite
    from deqbench.shard import parse_shard
    from deqbench.suite import load_suite, select, smoke

    share = parse_shard(shard) if shard else None
    suite = load_suite(suite_file, overrides)
    is_train = getattr(suite, "kind", "solve") == "train"
    given = {"--limit": limit, "--only": only, "--max-steps": max_steps}
    _check_smoke(suite_file, is_train, given | {"--max-eval-batches": max_eval_batches})
    if nproc and not distributed.from_env().enabled:
        if not is_train:
            raise ConfigError(f"{suite_file}: --nproc applies to training suites")
        sys.exit(distributed.relaunch(nproc))
    if not distributed.from_env().is_main:  # one rank speaks for the job
        console.quiet = err_console.quiet = True
    _warn(suite)
    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise ConfigError(f"--out {out} with --resume {resume}: give one of them")
        out = resume
    elif out is not None:
        check_out(out)
    settings = dict(limit=limit, only=tuple(sorted(only)), max_steps=max_steps)
    settings["max_eval_batches"] = max_eval_batches
    record = suite_record(suite, settings)
    plan = None
    if resume is not None:
        rank0 = distributed.from_env().is_main
        plan = plan_resume(resume, suite, settings, shard=share, rewrite=rank0)
    if is_train:
        suite, meta, out = _take_share(suite, share, record, out)
        _run_train(suite, out, device, max_steps, max_eval_batches, meta, plan)
        return
    if only:
        suite = select(suite, only)
    if limit:
        suite = smoke(suite, limit)
    suite, meta, out = _take_share(suite, share, record, out)
    dev = resolve_device(device or suite.spec.suite.device)
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = check_out(Path("reports") / f"{suite.name}-{stamp}.csv")
    console.print(f"suite [bold]{suite.name}[/]: {len(suite.runs)} runs on {dev} → {out}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(suite.name, total=len(suite.runs))
        advance = lambda row: bar.advance(task)  # noqa: E731
        outcome = run_suite(suite, out, dev, on_row=advance, meta=meta, resume=plan)
    console.print(results_table(outcome.rows))
    if any(row.get("noisy") for row in outcome.rows):
        err_console.print(f"[yellow]warning:[/] {NOISY_NOTE}", highlight=False)
    diverged = sum(row["status"] == "diverged" for row in outcome.rows)
    if diverged:  # a result, not a failure (deqbench.results.FAILED), but never unseen
        err_console.print(
            f"[yellow]warning:[/] {diverged} run(s) diverged: a solver's measured outcome, "
            "like max_iter, so not counted as a failed run; see the status column",
            highlight=False,
        )
    console.print(f"wrote {out} (+ .traces.csv, .meta.json)")
    if outcome.interrupted:
        sys.exit(130)
    if outcome.failed:
        err_console.print(f"[red]{outcome.failed} run(s) failed[/]; see the error column")
        sys.exit(1)


#: The smoke options of each kind of suite.
_SMOKE = {False: ("--limit", "--only"), True: ("--max-steps", "--max-eval-batches")}


def _check_smoke(suite_file: Path, is_train: bool, given: dict[str, object]) -> None:
    """Refuse the other kind's smoke options: ignored, they would let a full suite run where
    a smoke run was asked for. Checked before ``--resume`` rewrites anything."""
    from deqbench.errors import ConfigError

    wrong = [flag for flag in _SMOKE[not is_train] if given[flag]]
    if wrong:
        kinds = ("training", "solve") if is_train else ("solve", "training")
        verb = "applies" if len(wrong) == 1 else "apply"
        raise ConfigError(
            f"{suite_file}: {' and '.join(wrong)} {verb} to {kinds[1]} suites; a {kinds[0]} "
            f"suite takes {' and '.join(_SMOKE[is_train])}"
        )


def _take_share(suite, share, record: dict, out: Path | None):
    """The suite's runs of ``share`` (all runs when None), the keys its meta.json adds (the
    suite's `deqbench.resume.suite_record`, and the share's) and its report path: by default
    ``reports/<suite>-<time>-shard-I-of-N.csv``."""
    if share is None:
        return suite, dict(record), out
    from deqbench.results import COLUMNS, TRAIN_COLUMNS, check_out
    from deqbench.shard import share_meta, take_share

    meta = {**record, **share_meta(suite, share, record["fingerprint"])}
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = check_out(Path("reports") / f"{suite.name}-{stamp}{share.suffix}.csv")
    part = take_share(suite, share)
    console.print(
        f"share {share} of suite [bold]{suite.name}[/]: {len(part.runs)} of its "
        f"{len(suite.runs)} runs"
    )
    if not part.runs and not out.exists():  # N above the run count: still a report to merge
        err_console.print(f"[yellow]warning:[/] share {share} holds none of the suite's runs")
        columns = TRAIN_COLUMNS if getattr(suite, "kind", "solve") == "train" else COLUMNS
        out.write_text(",".join(columns) + "\n", encoding="utf-8")
    return part, meta, out


def _run_train(
    suite,
    out: Path | None,
    device: str | None,
    max_steps: int | None,
    max_eval: int | None,
    meta: dict | None = None,
    plan=None,
) -> None:
    from deqbench import distributed
    from deqbench.display import TrainDisplay
    from deqbench.runner import resolve_device, run_suite
    from deqbench.train_suite import smoke_train

    if max_steps or max_eval:
        suite = smoke_train(suite, max_steps, max_eval)
    dev = resolve_device(device or suite.spec.suite.device)
    ctx = distributed.init(dev)
    dev = distributed.rank_device(dev, ctx)
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = distributed.from_main(Path("reports") / f"{suite.name}-{stamp}.csv", ctx)
    where = f"{dev}" if not ctx.enabled else f"{ctx.world_size} ranks ({ctx.backend}, {dev.type})"
    todo = len(suite.runs) - (len(plan.finished) if plan else 0)
    console.print(f"suite [bold]{suite.name}[/]: {todo} training runs on {where} → {out}")
    if plan is not None:
        console.print(f"resuming {out}: {len(plan.finished)} finished runs kept")
    try:
        with TrainDisplay(console, suite.name, todo) as display:
            outcome = run_suite(
                suite,
                out,
                dev,
                on_row=display.run_finished,
                observer=display,
                meta=meta,
                resume=plan,
                ctx=ctx,
            )
    finally:
        distributed.shutdown()
    console.print(train_table(outcome.rows))
    if (seeds := seeds_table(outcome.rows)) is not None:
        console.print(seeds)
    total = sum(row["wall_s"] for row in outcome.rows)
    console.print(f"wrote {out} (+ .steps.csv, .traces.csv, .meta.json) in {total:.0f} s")
    if outcome.interrupted:
        sys.exit(130)
    if outcome.failed:
        err_console.print(f"[red]{outcome.failed} run(s) failed[/]; see the error column")
        sys.exit(distributed.exit_code(1, ctx))


#: The final table of a training suite: row key → title (columns no row fills are dropped).
_TRAIN = {
    "model": "model",
    "solver": "solver",
    "gradient": "gradient",
    "options": "options",
    "seed": "seed",
    "status": "status",
    "eval_top1": "top-1 %",
    "eval_top1_ci": "95 % CI",
    "eval_miou": "mIoU %",
    "eval_pixel_acc": "pixel %",
    "f_nfe_mean": "f NFE",
    "f_rel_residual_median_final": "f res",
    "b_nfe_mean": "b NFE",
    "grad_cosine_median": "grad cos",
    "step_ms_median": "step ms",
    "saved_mb": "saved MB",
    "peak_mb": "peak MB",
    "train_s": "train s",
}
#: Run options already shown in their own column.
_SHOWN_OPTIONS = ("model.name", "deq.solver", "deq.gradient")


def _train_cells(row: dict) -> dict:
    cells = dict(row)
    options = json.loads(row["options"]) if isinstance(row.get("options"), str) else {}
    rest = {k.split(".")[-1]: v for k, v in options.items() if k not in _SHOWN_OPTIONS}
    cells["options"] = " ".join(f"{k}={v}" for k, v in rest.items())
    cuda = row.get("peak_mem_mb")
    cells["peak_mb"] = cuda if _cell(cuda) != "–" else row.get("rss_peak_mb")
    low, high = row.get("eval_top1_ci_low"), row.get("eval_top1_ci_high")
    if _cell(low) != "–" and _cell(high) != "–":
        cells["eval_top1_ci"] = f"{low:.1f}–{high:.1f}"
    cosine = row.get("grad_cosine_median")
    if _cell(cosine) != "–":  # near 1 the digits that matter come late: 0.9998, not "1"
        cells["grad_cosine_median"] = f"{cosine:.4f}"
    return cells


def train_table(rows: list[dict]) -> Table:
    """The final table of a training suite (the CSV has every column). ``peak MB`` is the
    CUDA peak allocated, or the CPU run's peak resident memory; ``options`` and ``seed`` are
    shown only when they vary. ``f res`` is the median relative residual of the last training
    forward, ``grad cos`` the median cosine of the run's gradient checks against the exact
    implicit gradient. ``95 % CI`` is top-1's Wilson interval; without seed repeats
    (`seeds_table` judges those), a top-1 within noise of the best run's is marked ``≈``."""
    from deqbench.compare import TRAIN_KEYS
    from deqbench.noise import has_repeats, tied_with_best

    cells = [_train_cells(r) for r in rows]
    keys = {k: v for k, v in _TRAIN.items() if any(_cell(c.get(k)) not in ("–", "") for c in cells)}
    for key in ("options", "seed"):
        if key in keys and len({_cell(c.get(key)) for c in cells}) < 2:
            del keys[key]
    ok = [r for r in rows if r.get("status") == "completed"]
    repeats = has_repeats(_frame(rows), TRAIN_KEYS)
    tied = [False] * len(ok) if repeats else tied_with_best(ok, "eval_top1")
    for c, mark in zip((c for c in cells if c.get("status") == "completed"), tied, strict=True):
        if mark:
            c["eval_top1"] = f"{_cell(c['eval_top1'])} ≈"
    table = Table(caption=_tied_caption(ok, tied, "eval_top1", "run", "Wilson intervals"))
    for title in keys.values():
        table.add_column(title, overflow="fold")
    colour = {"completed": None, "diverged": "yellow"}
    for c in cells:
        table.add_row(*(_cell(c.get(k)) for k in keys), style=colour.get(c["status"], "red"))
    return table


def _frame(rows: list[dict]):
    import pandas as pd  # here: `deqbench --help` must not import pandas

    return pd.DataFrame(rows)


def _tied_caption(rows: list, tied: list[bool], figure: str, what: str, how: str) -> str | None:
    """The legend of the ``≈`` marks, naming the best figure; None when nothing is marked."""
    if not any(tied):
        return None
    label = {"eval_top1": "top-1", "eval_miou": "mIoU"}[figure]
    best = max(float(r.get(figure)) for r in rows if _cell(r.get(figure)) != "–")
    return f"≈ {label} within noise of the best {what}'s {best:.3g} % (their 95 % {how} overlap)"


#: Figures of the seeds table: row key → title; each shown as mean ± SD over the seeds.
_SEEDS = {
    "eval_top1": "top-1 %",
    "eval_miou": "mIoU %",
    "eval_pixel_acc": "pixel %",
    "f_nfe_mean": "f NFE",
    "b_nfe_mean": "b NFE",
    "step_ms_median": "step ms",
    "saved_mb": "saved MB",
    "peak_mb": "peak MB",
    "train_s": "train s",
}


def seeds_table(rows: list[dict]) -> Table | None:
    """With seed repeats (``[suite] repeats``), one row per configuration (runs that differ
    only in seed): ``n``, its completed runs (``2/3`` when one of 3 failed), and each headline
    figure as mean ± sample SD over them. The top-1 (else mIoU) of a configuration within
    noise of the best one's is marked ``≈``. None when no configuration has several seeds."""
    from deqbench.compare import TRAIN_KEYS
    from deqbench.noise import has_repeats, seed_groups, tied_with_best

    frame = _frame(rows)
    if not has_repeats(frame, TRAIN_KEYS):
        return None
    frame["peak_mb"] = [_train_cells(r)["peak_mb"] for r in rows]
    groups = seed_groups(frame, TRAIN_KEYS, [*_SEEDS, "eval_count"]).to_dict("records")
    names = [_train_cells(g) for g in groups]  # model, solver, gradient, options as text
    shown = {
        k: t
        for k, t in (("model", "model"), ("solver", "solver"), ("gradient", "gradient"))
        if any(_cell(c.get(k)) not in ("–", "") for c in names)
    }
    if len({c["options"] for c in names}) > 1:
        shown["options"] = "options"
    figures = {k: t for k, t in _SEEDS.items() if any(_cell(g.get(k)) != "–" for g in groups)}
    figure = next((f for f in ("eval_top1", "eval_miou") if f in figures), None)
    tied = tied_with_best(groups, figure) if figure else [False] * len(groups)
    how = "intervals, Wilson over the images evaluated or t over the seeds,"
    caption = _tied_caption(groups, tied, figure, "configuration", how) if figure else None
    table = Table(title="over seeds: mean ± SD of the completed runs", caption=caption)
    for title in [*shown.values(), "n", *figures.values()]:
        table.add_column(title, overflow="fold")
    for group, name, mark in zip(groups, names, tied, strict=True):
        n = f"{group['n']}" + (f"/{group['runs']}" if group["n"] < group["runs"] else "")
        spread = [_mean_sd(group, k) + (" ≈" if mark and k == figure else "") for k in figures]
        style = None if group["status"] == "completed" else "red"
        table.add_row(*(_cell(name.get(k)) for k in shown), n, *spread, style=style)
    return table


def _mean_sd(group: dict, figure: str) -> str:
    """``mean ± SD`` (the SD to 2 significant digits, or units from 10), the mean alone for
    one value."""
    from deqbench.display import fmt

    mean, sd = group.get(figure), group.get(f"{figure}_sd")
    if _cell(mean) == "–":
        return "–"
    if _cell(sd) == "–":
        return fmt(mean)
    return f"{fmt(mean)} ± {sd:.0f}" if sd >= 10 else f"{fmt(mean)} ± {sd:.2g}"


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
    """`deqbench.display.fmt`, with options (stored as JSON) shown as ``k=v`` pairs."""
    from deqbench.display import fmt  # here, not at the top: rich.live is slow to import

    if isinstance(value, str) and value.startswith("{"):
        return " ".join(f"{k}={v}" for k, v in json.loads(value).items())
    return fmt(value)


NOISY_NOTE = (
    "a figure marked ! spread too widely to trust (IQR over 10 % of its median; the CSV's "
    "noisy column names it): rerun it on a quieter machine or with more repeats"
)


def _noisy(row: dict) -> set[str]:
    from deqbench.results import noisy_figures

    listed = row.get("noisy")
    noisy = set((listed if isinstance(listed, str) else noisy_figures(row)).split())
    if "bare_ms_median" in noisy:  # the ratio's denominator: a noisy bare loop skews it
        noisy.add("overhead_per_nfe")
    return noisy


def results_table(rows: list[dict]) -> Table:
    """A rich table of the columns a reader scans first; the CSV has them all. A figure whose
    spread is too wide to trust (`deqbench.results.noisy_figures`) is marked ``!``."""
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
        noisy = _noisy(row)
        cells = (_cell(row.get(k)) + ("!" if k in noisy else "") for k in shown)
        table.add_row(*cells, style=colour.get(row["status"], "red"))
    return table


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
    from deqbench import compare_render
    from deqbench.compare import compare as compare_runs
    from deqbench.compare import compare_pairs, load_report, meta_differences, parse_pair
    from deqbench.errors import ConfigError

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
    """Draw a report as PNGs: accuracy, memory, convergence traces, training loss."""
    from deqbench.plot import plot_report

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
    from deqbench.merge import merge_reports

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
