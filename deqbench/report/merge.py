"""``deqbench merge``: the shares of one suite (``deqbench run --shard I/N``) as one report.

Each share's ``meta.json`` says which suite it belongs to (name,
`deqbench.execution.shard.fingerprint`,
deqbench version), how the suite was split and which run indices the whole suite has. Shares
that do not belong together are refused; runs that no share holds are named. Cells are copied
as text, so the merged CSV reads exactly as the shares do.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deqbench.errors import ConfigError
from deqbench.report.results import check_out, companion, companion_suffixes
from deqbench.report.schema import DEFAULT_KIND

#: Companion CSVs that are merged when a share has them (keyed by run, in step order).


@dataclass
class Share:
    """One share's report as read back."""

    path: Path
    meta: dict[str, Any]
    rows: pd.DataFrame

    @property
    def label(self) -> str:
        shard = self.meta["shard"]
        return f"{self.path} (share {shard['index']}/{shard['count']})"


@dataclass
class Merged:
    """What `merge_reports` wrote."""

    path: Path
    suite: str
    shares: int
    rows: int
    missing: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    companions: list[str] = field(default_factory=list)


def index_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted run indices as half-open ``[start, stop]`` ranges: ``0..23`` is ``[[0, 24]]``."""
    ordered = sorted(set(indices))
    groups = itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0])
    ranges = []
    for _, group in groups:
        members = [value for _, value in group]
        ranges.append([members[0], members[-1] + 1])
    return ranges


def expand_ranges(ranges: Iterable[Iterable[int]]) -> list[int]:
    """The inverse of `index_ranges`."""
    return [i for start, stop in ranges for i in range(start, stop)]


def merge_reports(paths: Sequence[str | Path], out: str | Path, strict: bool = False) -> Merged:
    """Merge the share reports ``paths`` into ``out`` (CSV, meta and companions).

    Shares of different suites, fingerprints, versions or splits, a share given twice and a run
    index held twice are `ConfigError`s. Missing runs are a warning (`Merged.missing`), or with
    ``strict`` an error, raised before anything is written.
    """
    shares = [_read_share(Path(p)) for p in paths]
    _check_together(shares)
    owner = _check_runs(shares)
    first = shares[0].meta
    expected = set(expand_ranges(first["suite_run_ranges"]))
    missing = sorted(expected - set(owner))
    warnings = []
    if missing:
        line = _missing_line(first, shares, missing)
        if strict:
            raise ConfigError(line + " (--strict)")
        warnings.append(line + "; merged the runs there are")
    devices = sorted({str(s.meta.get("device_name")) for s in shares})
    if len(devices) > 1:
        warnings.append(
            f"the shares ran on different devices ({', '.join(devices)}): compare their "
            "times and memory with care"
        )
    out = check_out(out)
    frame = _concat([s.rows for s in shares])
    frame.to_csv(out, index=False)
    written = []
    for suffix in companion_suffixes():
        parts = [_read_csv(companion(s.path, suffix)) for s in shares]
        parts = [p for p in parts if p is not None]
        if parts:
            _concat(parts).to_csv(companion(out, suffix), index=False)
            written.append(suffix)
    meta = {k: v for k, v in first.items() if k != "shard"}
    meta.update(
        runs=len(frame),
        missing_runs=missing,
        merged_from=[
            {
                "report": str(s.path),
                "shard": s.meta["shard"],
                "runs": len(s.rows),
                **{k: s.meta.get(k) for k in ("device", "device_name", "git_commit")},
            }
            for s in shares
        ],
    )
    meta_path = companion(out, "meta.json")
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    return Merged(out, first["suite"], len(shares), len(frame), missing, warnings, written)


def _read_share(path: Path) -> Share:
    if not path.is_file():
        raise ConfigError(f"{path}: no such report")
    meta_path = companion(path, "meta.json")
    if not meta_path.is_file():
        raise ConfigError(
            f"{path}: no {meta_path.name} beside it; merge needs the metadata "
            "deqbench run writes with each share"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc})") from None
    keys = ("shard", "suite", "fingerprint", "suite_run_ranges")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise ConfigError(
            f"{path}: not a share of a suite (its {meta_path.name} has no shard, suite and "
            "fingerprint); write shares with deqbench run SUITE --shard I/N"
        )
    rows = _read_csv(path)
    return Share(path, meta, rows if rows is not None else pd.DataFrame(columns=["run"]))


def _read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV as text cells (nothing reformatted); None when there is no such file."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:  # a share interrupted before its first row
        return pd.DataFrame(columns=["run"])
    except pd.errors.ParserError as exc:
        raise ConfigError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
    if "run" not in frame.columns:
        raise ConfigError(f"{path}: no run column; is it a deqbench report?")
    return frame


def _check_together(shares: list[Share]) -> None:
    """The same suite, version, split and fingerprint; no share twice."""
    a = shares[0]
    seen: dict[int, Share] = {}
    for b in shares:
        checks = (
            ("suite", "is a share of suite {b!r}, {a_path} of suite {a!r}"),
            ("kind", "is a share of a {b} suite, {a_path} of a {a} suite"),
            (
                "deqbench",
                "was written by deqbench {b}, {a_path} by {a}: run all shares with one version",
            ),
        )
        for key, text in checks:
            va, vb = (s.meta.get(key, DEFAULT_KIND if key == "kind" else None) for s in (a, b))
            if va != vb:
                raise ConfigError(f"{b.path} " + text.format(a=va, b=vb, a_path=a.path))
        if b.meta["shard"]["count"] != a.meta["shard"]["count"]:
            raise ConfigError(
                f"{b.label} and {a.label} split the suite differently: merge the shares of "
                "one --shard I/N split"
            )
        if b.meta["fingerprint"] != a.meta["fingerprint"]:
            raise ConfigError(
                f"{b.path} and {a.path} ran suite {a.meta['suite']!r} differently (fingerprint "
                f"{b.meta['fingerprint']} vs {a.meta['fingerprint']}): the suite file, a --set, "
                "--limit, --only or the smoke caps differ"
            )
        index = b.meta["shard"]["index"]
        if index in seen:
            raise ConfigError(f"{seen[index].path} and {b.label}: the same share given twice")
        seen[index] = b


def _check_runs(shares: list[Share]) -> dict[int, Share]:
    """Run index → the share that holds it; a run held twice, or outside its share, is refused."""
    owner: dict[int, Share] = {}
    for share in shares:
        count, index = share.meta["shard"]["count"], share.meta["shard"]["index"]
        for value in share.rows["run"]:
            try:
                run = int(value)
            except ValueError:
                raise ConfigError(f"{share.path}: run {value!r} is not a run index") from None
            if run in owner:
                where = "twice in it" if owner[run] is share else f"also in {owner[run].path}"
                raise ConfigError(f"{share.path}: run {run} is {where}; merge each run once")
            if run % count != index - 1:
                raise ConfigError(
                    f"{share.label}: holds run {run}, which belongs to share "
                    f"{run % count + 1}/{count}"
                )
            owner[run] = share
    return owner


def _missing_line(meta: dict[str, Any], shares: list[Share], missing: list[int]) -> str:
    count = meta["shard"]["count"]
    absent = sorted(set(range(1, count + 1)) - {s.meta["shard"]["index"] for s in shares})
    line = (
        f"{len(missing)} of {meta['suite_runs']} runs of suite {meta['suite']!r} are missing: "
        f"run {_listing(missing)}"
    )
    if absent:
        line += f" (shares not given: {', '.join(f'{i}/{count}' for i in absent)})"
    return line


def _listing(values: Iterable[int], limit: int = 20) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one after another, ordered by run; a run's own rows keep their order."""
    columns = max((f for f in frames), key=lambda f: len(f.columns)).columns
    frame = pd.concat([f.reindex(columns=columns, fill_value="") for f in frames])
    order = frame["run"].astype(int).argsort(kind="stable")
    return frame.iloc[order].reset_index(drop=True)
