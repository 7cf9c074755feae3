"""What ``deqbench run SUITE --resume REPORT.csv`` does before running anything.

A report's ``meta.json`` records the suite it ran (`suite_record`: the validated spec, the
command-line settings that change what runs and their fingerprint) and the deqbench version.
`plan_resume` refuses a suite, settings or version that changed, names the runs whose rows are
final, and rewrites the report and its companion CSVs without the rows of runs to redo, so that
after the resumed suite has appended them no row is duplicated and none is lost.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deqbench.errors import ConfigError
from deqbench.execution.checkpoint import fsync_dir
from deqbench.execution.shard import fingerprint
from deqbench.report.results import companion, companion_suffixes
from deqbench.report.schema import RunStatus

#: The status of a row that is not final: the run is done again when the suite is resumed.
#: Changes listed in a refusal before "and N more".
_SHOWN = 5
_MISSING = object()


def suite_record(suite: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a report's ``meta.json`` records so that `plan_resume` can check a resumed suite:
    ``fingerprint``, ``spec`` (``suite.spec.model_dump(mode="json")``) and ``settings`` (the
    ones given, JSON values: tuples become lists, a `deqbench.execution.shard.Shard` ``"I/N"``)."""
    return {
        "fingerprint": fingerprint(suite, settings),
        "spec": _json(suite.spec.model_dump(mode="json")),
        "settings": _settings(settings),
    }


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    return _json({k: v for k, v in sorted(settings.items()) if v not in (None, (), [], "")})


def _json(value: Any) -> Any:
    """``value`` as it reads back from ``meta.json``, so that the two compare equal."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class ResumePlan:
    """What resuming a report found: runs to skip and runs whose row was removed to redo."""

    finished: frozenset[int]  #: run indices whose rows are final: skip them
    redo: frozenset[int]  #: runs that had only `interrupted` rows (removed): run them again
    report: Path


def plan_resume(
    report: str | Path,
    suite: Any,
    settings: Mapping[str, Any],
    shard: Any = None,
    rewrite: bool = True,
    columns: Sequence[str] = (),
) -> ResumePlan:
    """Check that ``suite`` run with ``settings`` (and as ``shard``, a
    `deqbench.execution.shard.Shard`
    or None) is the one ``report`` holds, then drop the report's rows that are not final (and
    duplicates) and return the plan. ``rewrite=False`` only plans (torchrun's other ranks).
    ``columns``, the kind's result columns, must be the report's header (empty: unchecked).

    A row whose status is anything but ``interrupted`` is final; of a run's several final rows
    the last is kept. The report, ``.steps.csv`` and ``.traces.csv`` keep only the rows of
    finished runs (companion rows of a run without a final row are orphans of an interrupted
    write), copied as text; each changed file is replaced atomically, companions first.
    """
    from deqbench import __version__

    report = Path(report)
    flag = f"--resume {report}"
    meta_path = companion(report, "meta.json")
    # A suite writes its meta.json, then the report's header: killed between the two, the
    # report is missing but the suite is known, so it resumes as an empty report.
    if not report.is_file() and not meta_path.is_file():
        raise ConfigError(f"{flag}: no such report")
    if not meta_path.is_file():
        raise ConfigError(f"{flag}: has no {meta_path.name}, so it cannot be resumed")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: {meta_path.name} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "spec" not in meta:
        raise ConfigError(
            f"{flag}: its {meta_path.name} records no suite spec (written by a deqbench "
            "without resume), so it cannot be resumed"
        )
    record = suite_record(suite, settings)
    changes = _changes(meta, record, __version__)
    old_share = meta.get("shard")
    new_share = {"index": shard.index, "count": shard.count} if shard is not None else None
    if old_share != new_share:
        changes.insert(0, f"--shard {_share(old_share)} → {_share(new_share)}")
    if changes:
        listed = "; ".join(changes[:_SHOWN])
        if len(changes) > _SHOWN:
            listed += f"; and {len(changes) - _SHOWN} more"
        raise ConfigError(
            f"{flag}: the suite changed since the report was written: {listed} (resume with "
            "the same suite, --set, options and deqbench, or start a new report)"
        )

    rows, torn = _read(report, flag)
    for column in ("run", "status"):
        if column not in rows.columns:
            raise ConfigError(f"{flag}: has no {column} column; is it a deqbench report?")
    if columns:
        _check_header(list(rows.columns), list(columns), flag)
    runs = _run_indices(rows, report, flag)
    final = runs[rows["status"] != RunStatus.INTERRUPTED]
    kept_row = final.groupby(final).tail(1)  # the last final row of each run: index → run
    keep = rows.index.isin(kept_row.index)
    finished = frozenset(int(r) for r in kept_row)
    redo = frozenset(int(r) for r in runs) - finished

    for suffix in companion_suffixes() if rewrite else ():
        path = companion(report, suffix)
        if not path.is_file():
            continue
        extra, extra_torn = _read(path, flag)
        if extra.empty:
            if extra_torn:
                _write(path, extra)
            continue
        extra_runs = _run_indices(extra, path, flag)
        kept = extra_runs.isin(finished)
        for row, run in kept_row.items():
            attempts = list(runs.index[runs == run])
            if len(attempts) > 1:
                kept &= ~_other_attempts(
                    extra, extra_runs == run, attempts.index(row), len(attempts)
                )
        if extra_torn or not kept.all():
            _write(path, extra[kept])
    if rewrite and (torn or not keep.all()):
        _write(report, rows[keep])
    return ResumePlan(finished=finished, redo=redo, report=report)


def _share(share: Mapping[str, int] | None) -> str:
    return f"{share['index']}/{share['count']}" if share else "(unset)"


def _changes(meta: Mapping[str, Any], record: Mapping[str, Any], version: str) -> list[str]:
    """What differs between the report's record and the suite to resume, as short phrases."""
    changes = []
    old_version = meta.get("deqbench")
    if old_version != version:
        changes.append(f"deqbench {old_version or '(unset)'} → {version}")
    old_settings, new_settings = _settings(meta.get("settings") or {}), record["settings"]
    for key in sorted(set(old_settings) | set(new_settings)):
        old, new = old_settings.get(key), new_settings.get(key)
        if old != new:
            changes.append(f"--{key.replace('_', '-')} {_show(old)} → {_show(new)}")
    changes += [
        f"{path} {_show(old)} → {_show(new)}"
        for path, old, new in _diff(meta["spec"], record["spec"])
    ]
    old_print = meta.get("fingerprint")
    if not changes and old_print not in (None, record["fingerprint"]):
        changes.append(f"fingerprint {old_print} → {record['fingerprint']}")
    return changes


def _diff(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted paths of the leaves where ``old`` and ``new`` differ. Tables are walked; lists of
    tables of one length are walked by position; other lists are leaves."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            step = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) else json.dumps(key)
            child = f"{path}.{step}" if path else step
            out += _diff(old.get(key, _MISSING), new.get(key, _MISSING), child)
        return out
    walk = isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
    if walk and any(isinstance(v, dict) for v in old + new):
        pairs = enumerate(zip(old, new, strict=True))
        return [d for i, (a, b) in pairs for d in _diff(a, b, f"{path}[{i}]")]
    return [] if old == new and type(old) is type(new) else [(path, old, new)]


def _check_header(header: list[str], columns: list[str], flag: str) -> None:
    """Appended rows must line up with the report's header: a report written by a deqbench
    whose kind had other columns cannot be continued (an empty report reads as run, status)."""
    if header in (["run", "status"], columns):
        return
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    what = (
        "; ".join(
            part
            for part in (
                f"this deqbench adds {', '.join(missing)}" if missing else "",
                f"it has {', '.join(extra)}, which this deqbench does not write" if extra else "",
            )
            if part
        )
        or "the same columns in another order"
    )
    raise ConfigError(
        f"{flag}: its columns are not the ones this deqbench writes ({what}); it was written "
        "by another version of deqbench: start a new report"
    )


def _show(value: Any) -> str:
    return "(unset)" if value is _MISSING or value is None else repr(value)


def _read(path: Path, flag: str) -> tuple[pd.DataFrame, bool]:
    """A CSV as text cells, nothing reformatted, and whether its end was torn: a last line
    without its newline (a write cut short by a kill) is left out, as it was never a row. A
    missing file reads as an empty one."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    torn = bool(text) and not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return pd.DataFrame(columns=["run", "status"]), torn
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False), torn
    except pd.errors.ParserError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{flag}: {path.name} is not a readable CSV ({reason})") from None


def _run_indices(frame: pd.DataFrame, path: Path, flag: str) -> pd.Series:
    try:
        return frame["run"].astype(int)
    except ValueError:
        bad = next(v for v in frame["run"] if not v.strip().lstrip("-").isdigit())
        raise ConfigError(f"{flag}: {path.name}: run {bad!r} is not a run index") from None


def _other_attempts(extra: pd.DataFrame, mine: pd.Series, kept: int, attempts: int) -> pd.Series:
    """Companion rows (``mine``: the run's) written by attempts other than the ``kept``-th of
    the run's ``attempts`` rows. Each attempt appended its block with its row, so the blocks
    (split where ``step`` stops rising) line up with the rows; when they do not (an attempt
    wrote none), nothing is dropped rather than the wrong block."""
    other = pd.Series(False, index=extra.index)
    if "step" not in extra.columns:
        return other
    steps = pd.to_numeric(extra.loc[mine, "step"], errors="coerce")
    block = (steps.diff().fillna(1) <= 0).cumsum()
    if block.nunique() == attempts:
        other[block.index] = (block != kept).to_numpy()
    return other


def _write(path: Path, frame: pd.DataFrame) -> None:
    """Replace ``path`` with ``frame`` atomically: temp file in the folder, fsync, rename."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
