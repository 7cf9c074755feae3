"""The ``deqbench`` command line: run, validate, list, compare, plot and merge."""

from deqbench.cli import listing, reports, running
from deqbench.cli.app import console, err_console, main
from deqbench.cli.listing import _plural

__all__ = ["_plural", "console", "err_console", "listing", "main", "reports", "running"]
