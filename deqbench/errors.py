"""Errors that the CLI turns into one clear line, and the "did you mean" helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeqbenchError(Exception):
    """Base class of errors reported to the user as one line, without a traceback."""


class ConfigError(DeqbenchError):
    """A suite file, an override or an option is wrong. The message names file, key and need."""


class UnknownNameError(DeqbenchError, KeyError):
    """A name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginConflictError(DeqbenchError):
    """Two plugins registered the same name under the same kind."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` (or the list of choices when nothing is close)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if choices:
        return "; available: " + ", ".join(choices)
    return "; nothing is registered"


class CheckpointError(DeqbenchError):
    """A checkpoint that cannot be loaded into this model; the message names file and cause."""
