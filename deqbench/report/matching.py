"""Reading reports for a comparison: what kind each is, how their rows match one to one, and
whether their machines and versions make their times comparable."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from deqbench.errors import ConfigError
from deqbench.plugins import get_registry
from deqbench.report.results import companion, read_report

#: Meta fields that must agree for times and memory to be comparable across reports.
_META_FIELDS = {
    "platform": "machine",
    "device_name": "machine",
    "cpu_count": "machine",
    "torch_threads": "machine",  # times scale with it as much as with the machine
    "cpu_model": "machine",
    "gpu_name": "machine",
    "gpu_count": "machine",
    "device": "device",
    "python": "versions",
    "torch": "versions",
    "deqbench": "versions",
    "cuda": "versions",
    "cudnn": "versions",
    "nccl": "versions",
    "driver": "versions",
}
#: Meta dicts whose entries must agree key by key: the settings that change numerics, and the
#: versions of the packages both suites imported.
_META_DICTS = {  # key → (what differs, how an entry is named)
    "numerics_env": ("numerics settings", ""),
    "torch_flags": ("numerics settings", "torch "),
    "plugins": ("versions", "plugin "),
    "packages": ("versions", "package "),
}
_MAX_LISTED = 6  #: differences listed per kind before "and N more"


# ----------------------------------------------------------------------------- loading


def load_report(path: str | Path) -> pd.DataFrame:
    """Read a report CSV; anything that is not a deqbench report is one `ConfigError` line."""
    try:
        frame = read_report(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path}: empty file, not a deqbench report") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a deqbench report CSV ({first})") from None
    report_kind(frame, str(path))
    return frame


def report_kind(frame: pd.DataFrame, name: str = "report") -> str:
    """The name of the report's kind of run (`deqbench.runs.kind.RunKind`): its ``kind``
    column's, else the kind whose marking columns (``signature``) it has."""
    kinds = [entry.obj for entry in get_registry().entries(["run_kinds"])]
    if "kind" in frame.columns:
        named = set(frame["kind"].dropna().astype(str)) & {k.name for k in kinds}
        if len(named) == 1:
            return named.pop()
    columns = set(frame.columns)
    for kind in kinds:
        if kind.signature and kind.signature <= columns:
            return kind.name
    sets = "; ".join(f"{k.title}: {', '.join(sorted(k.signature))}" for k in kinds if k.signature)
    raise ConfigError(
        f"{name}: not a deqbench report: it has none of the column sets of one ({sets}); "
        f"its columns are {', '.join(map(str, frame.columns[:8]))}"
        + (" …" if len(frame.columns) > 8 else "")
    )


# ----------------------------------------------------------------------------- matching


def canon(value: object) -> str:
    """A key value as text, so 18 and 18.0, or 1e-3 and 0.001, match across reports."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        number = float(value)
        return str(int(number)) if number.is_integer() else f"{number:.12g}"
    text = str(value)
    if text.startswith("{"):  # options, stored as JSON: key order must not matter
        try:
            return json.dumps(json.loads(text), sort_keys=True)
        except ValueError:
            return text
    return text


def keyed(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its ``keys`` columns as `canon` text, ready to match on."""
    out = frame.copy()
    for key in keys:
        out[key] = frame[key].map(canon).astype(object)
    return out


def _duplicates(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return frame[frame.duplicated(list(keys), keep=False)]


def _describe(row: pd.Series, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys if row[k] != "")


def match_keys(
    frames: Sequence[tuple[str, pd.DataFrame]],
    keys: Sequence[str],
    tiebreakers: Sequence[str],
) -> tuple[list[str], list[str]]:
    """The keys (of ``keys``, plus tiebreakers only as needed) that make every row of every
    frame unique; raises `ConfigError` naming a colliding run when nothing does."""
    present = [k for k in keys if all(k in f for _, f in frames)]
    if not present:
        raise ConfigError("the reports share none of the columns that identify a run")
    notes: list[str] = []
    extra = [t for t in tiebreakers if all(t in f for _, f in frames)]
    while True:
        clash = [(n, _duplicates(keyed(f, present), present)) for n, f in frames]
        clash = [(n, d) for n, d in clash if len(d)]
        if not clash:
            return present, notes
        name, dup = clash[0]
        if not extra:
            first = dup.iloc[0]
            same = int((dup[present] == first[present]).all(axis=1).sum())
            raise ConfigError(
                f"{name}: {same} rows share the identity "
                f"({_describe(dup.iloc[0], present) or 'no identity values'}), so runs cannot "
                "be matched one to one (a report appended to twice, or a swept key that no "
                "identity column records?)"
            )
        nxt = extra.pop(0)
        notes.append(f"rows of {name} share their identity columns; matching on {nxt!r} as well")
        present.append(nxt)


# ----------------------------------------------------------------------------- metadata


def meta_differences(a: str | Path, b: str | Path) -> list[str]:
    """Warnings when the two reports' ``.meta.json`` show different machines, devices or
    versions (their times and memory are then not comparable as ratios)."""
    metas = []
    for path in (Path(a), Path(b)):
        meta_path = companion(path, "meta.json")
        try:
            metas.append(json.loads(meta_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return [f"no {meta_path.name} beside {path}: machines and versions not checked"]
        except (OSError, ValueError) as exc:
            return [f"{meta_path}: unreadable ({exc}); machines and versions not checked"]
    ma, mb = metas
    found: dict[str, list[str]] = {}
    # A key only one report has (a report from before the key was recorded) is not compared.
    for key, what in _META_FIELDS.items():
        if key in ma and key in mb and ma[key] != mb[key]:
            found.setdefault(what, []).append(f"{key} {ma[key]!r} vs {mb[key]!r}")
    for key, (what, prefix) in _META_DICTS.items():
        da, db = ma.get(key) or {}, mb.get(key) or {}
        for name in sorted(set(da) & set(db)):
            if da[name] != db[name]:
                va, vb = ("unset" if v is None else v for v in (da[name], db[name]))
                found.setdefault(what, []).append(f"{prefix}{name} {va} vs {vb}")
    return [
        f"the reports come from different {what}: {_listed(diffs)}" for what, diffs in found.items()
    ]


def _listed(diffs: list[str]) -> str:
    shown = "; ".join(diffs[:_MAX_LISTED])
    rest = len(diffs) - _MAX_LISTED
    return f"{shown}; and {rest} more" if rest > 0 else shown
