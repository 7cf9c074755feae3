"""Validation of a training suite's ``[logging]`` table: the loggers it selects are registered
and can run here, and their options are ones their factories take. Run at validation, so a
missing package or a typo stops the suite before any run starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deqbench.plugins import Registry
from deqbench.suite.train_tables import LoggingTable
from deqbench.suite.validation import Fail, check_options, lookup

DEPRECATED_TENSORBOARD = (
    '[logging] tensorboard = true is deprecated; write [logging] loggers = ["tensorboard"]'
)


def check_loggers(table: LoggingTable, registry: Registry, fail: Fail) -> None:
    """Each selected logger is registered (else "did you mean") and has its packages (else
    what installs them); each ``[logging.options.<name>]`` names a registered logger and
    options its factory takes, and a selected logger is built with them (it contacts
    nothing until a run starts), so bad values fail here too."""
    selected = table.selected()
    for name in selected:
        key = "logging.loggers" if name in table.loggers else "logging.tensorboard"
        factory = lookup(registry, "loggers", name, key, fail)
        why = _missing(factory)
        if why:
            fail(key, f"logger {name!r} {why}")
    for name, options in table.options.items():
        key = f"logging.options.{name}"
        factory = lookup(registry, "loggers", name, key, fail)
        check_options(factory, options, key, fail, build=name in selected)


def _missing(factory: Any) -> str | None:
    """The factory's reason it cannot run here (`deqbench.loggers.RunLogger.missing`)."""
    missing = getattr(factory, "missing", None)
    return missing() if callable(missing) else None


def logging_warnings(path: Path, tables: Sequence[LoggingTable]) -> tuple[str, ...]:
    """The suite's warnings about ``[logging]``: the deprecated ``tensorboard = true``."""
    if any(table.tensorboard for table in tables):
        return (f"{path}: {DEPRECATED_TENSORBOARD}",)
    return ()
