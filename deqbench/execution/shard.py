"""Shares of a suite (``deqbench run SUITE --shard I/N``): which runs a share holds, and what its
report records so that `deqbench.report.merge` can check that shares belong together.

A share is chosen by run index alone (``index % N == I - 1``), the same for solve and training
suites: every process that loads the same suite picks the same runs without talking to the
others, and N shares cover every run exactly once, whatever subset ``--only`` left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deqbench.errors import ConfigError
from deqbench.report.merge import index_ranges


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (from 1) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """What the share adds to a report's default name, e.g. ``-shard-2-of-4``."""
        return f"-shard-{self.index}-of-{self.count}"

    def holds(self, run_index: int) -> bool:
        """Whether the run of this index belongs to this share."""
        return run_index % self.count == self.index - 1


def parse_shard(text: str) -> Shard:
    """``"I/N"`` with 1 ≤ I ≤ N, else a one-line `ConfigError`."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 2/4 (share 2 of 4)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(
            f"--shard {text}: the share I must be between 1 and N (here N = {count}); "
            "shares are numbered from 1, as Slurm's --array=1-N numbers its tasks"
        )
    return Shard(index, count)


def take_share(suite: Any, shard: Shard) -> Any:
    """The same suite (solve or training) with only the runs of ``shard``; indices are kept."""
    return dataclasses.replace(suite, runs=tuple(r for r in suite.runs if shard.holds(r.index)))


def fingerprint(suite: Any, settings: Mapping[str, Any] | None = None) -> str:
    """A short hash of the validated suite spec (overrides applied), the deqbench version and
    the command-line ``settings`` that change what runs (``--limit``, ``--only``, …): shares
    that agree on it ran the same suite the same way."""
    from deqbench import __version__

    payload = {
        "spec": suite.spec.model_dump(mode="json"),
        "deqbench": __version__,
        "settings": {k: v for k, v in sorted((settings or {}).items()) if v not in (None, ())},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def share_meta(suite: Any, shard: Shard, suite_fingerprint: str) -> dict[str, Any]:
    """What a share's ``meta.json`` records beside the usual metadata. ``suite`` is the whole
    suite as run (after ``--only``), before `take_share`; ``suite_fingerprint`` is its
    `fingerprint`."""
    return {
        "shard": {"index": shard.index, "count": shard.count},
        "suite_runs": len(suite.runs),
        "suite_run_ranges": index_ranges(r.index for r in suite.runs),
        "fingerprint": suite_fingerprint,
    }
