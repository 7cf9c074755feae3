"""The ``deqbench`` command group and its consoles; each command lives in a module beside this."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

from deqbench.errors import DeqbenchError


class _Console(Console):
    """Rich output; tables keep a readable width when piped or captured (not a terminal)."""

    def __init__(self, stderr: bool = False) -> None:
        # no emoji codes: a message such as "--pair a:b:c" is text, not :b: → 🅱
        super().__init__(stderr=stderr, soft_wrap=True, emoji=False)
        if not self.is_terminal:
            # the quick start's 15 columns need 175: a log file takes a wide line whole
            self.width = max(self.width, 200)


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
