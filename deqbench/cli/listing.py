"""``deqbench list``: what the loaded plugins registered."""

from __future__ import annotations

import json

import click
from rich.table import Table

from deqbench.cli.app import console, err_console, main
from deqbench.hookspecs import KINDS
from deqbench.plugins import get_registry


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
