"""The ``deqbench`` command line: run, eval, validate, list, compare, plot, merge and report."""

from deqbench.cli import evaluate, listing, publish, reports, running
from deqbench.cli.app import console, err_console, main
from deqbench.cli.listing import _plural

__all__ = [
    "_plural",
    "console",
    "err_console",
    "evaluate",
    "listing",
    "main",
    "publish",
    "reports",
    "running",
]
