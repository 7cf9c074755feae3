"""What tells a report's runs apart, as short labels for plot legends.

A label names the identity values that vary across the report, not the fixed ones. Option
dicts (``model_options`` and the like, JSON) are opened into their entries, so a label says
``depth=6`` rather than ``model_options={...}``, and an empty dict says nothing. Where two
labels would still read alike, the values that differ between just those runs are added,
from the identity keys and the ``options`` column (the matrix/include keys of each run).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from deqbench.plugins import get_run_kind

#: Keys whose values name themselves (``ift``, not ``gradient=ift``).
BARE = {"model", "problem", "cell", "solver", "gradient", "dataset", "head"}
#: Option columns and the identity key they belong to (their entries follow it in a label).
OPTION_COLUMNS = {
    "model_options": "model",
    "solver_options": "solver",
    "gradient_options": "gradient",
}


def blank(value: object) -> bool:
    """A missing report value: None, NaN or an empty string."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def value_text(value: object) -> str:
    """A report value as a label shows it (``6``, not ``6.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _entries(text: object, prefix: str) -> dict[str, str]:
    """A JSON dict cell opened into ``prefix.key`` → value text (nested dicts too)."""
    if blank(text):
        return {}
    try:
        data = json.loads(str(text))
    except ValueError:
        return {prefix: str(text)}  # not JSON: the cell as it is
    if not isinstance(data, dict):
        return {prefix: value_text(data)}
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_entries(json.dumps(value), f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value_text(value)
    return out


def identity_table(frame: pd.DataFrame, kind: str, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per row of ``frame``, its identity values as text (None where blank), option columns
    opened into one column per entry placed after their owner key; keys in ``drop`` left out."""
    keys = [k for k in get_run_kind(kind).keys if k in frame and k not in drop]
    columns: dict[str, list[str | None]] = {}
    opened = {k: [_entries(v, k) for v in frame[k]] for k in keys if k in OPTION_COLUMNS}
    order = [k for k in keys if k not in opened]
    for column, owner in OPTION_COLUMNS.items():
        if column in opened:  # entries right after the key they belong to
            at = order.index(owner) + 1 if owner in order else len(order)
            order.insert(at, column)
    for key in order:
        if key in opened:
            names = sorted({name for row in opened[key] for name in row})
            for name in names:
                columns[name] = [row.get(name) for row in opened[key]]
        else:
            columns[key] = [None if blank(v) else value_text(v) for v in frame[key]]
    return _texts(pd.DataFrame(columns, index=frame.index))


def extra_table(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """The ``options`` column (a run's matrix/include keys) opened, entries whose last part is
    in ``drop`` left out: what may tell runs apart beyond the identity keys."""
    if "options" not in frame:
        return pd.DataFrame(index=frame.index)
    rows = [_entries(v, "options") for v in frame["options"]]
    names = sorted({n for row in rows for n in row if n.rsplit(".", 1)[-1] not in drop})
    return _texts(pd.DataFrame({n: [row.get(n) for row in rows] for n in names}, index=frame.index))


def _texts(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as objects: text, or None where blank (pandas turns some None into NaN)."""
    table = table.astype(object)
    return table.where(table.notna(), None)


def _part(column: str, value: str) -> str:
    if column in BARE:
        return value
    if column == "image_size":
        return f"{value} px"
    name = column.split(".", 1)[1] if column.split(".", 1)[0] in OPTION_COLUMNS else column
    return f"{name.removeprefix('options.')}={value}"


def _varying(table: pd.DataFrame) -> list[str]:
    """Columns holding more than one value (blanks aside)."""
    return [c for c in table if table[c].dropna().nunique() > 1]


def describe(table: pd.DataFrame, extra: pd.DataFrame | None = None) -> dict[object, str]:
    """Index → the varying values of its row, as one short text; rows that would read alike
    gain the columns (of ``table``, then ``extra``) whose values differ between them."""
    shown = _varying(table)
    texts = {
        i: " ".join(_part(c, table.at[i, c]) for c in shown if table.at[i, c] is not None)
        for i in table.index
    }
    both = table if extra is None else pd.concat([table, extra], axis=1)
    for same in pd.Series(texts).groupby(pd.Series(texts)).groups.values():
        if len(same) < 2:
            continue
        group = _texts(both.loc[list(same)])
        differ = [c for c in both if c not in shown and group[c].map(str).nunique() > 1]
        for i in same:
            added = [_part(c, group.at[i, c]) for c in differ if group.at[i, c] is not None]
            texts[i] = " ".join(t for t in (texts[i], *added) if t)
    return texts


def run_labels(frame: pd.DataFrame, kind: str) -> dict[int, str]:
    """Run index → ``run N: <what varies>`` over the report's identity keys and options."""
    rows = frame[~frame["run"].map(blank)]
    texts = describe(identity_table(rows, kind), extra_table(rows))
    return {
        int(rows.at[i, "run"]): f"run {int(rows.at[i, 'run'])}" + (f": {t}" if t else "")
        for i, t in texts.items()
    }


def configurations(
    frame: pd.DataFrame, kind: str, drop: tuple[str, ...]
) -> tuple[pd.Series, dict[int, str]]:
    """Rows that differ only in the keys of ``drop`` (an x axis, seeds) form one configuration:
    a configuration number per row, and each configuration's label."""
    table = identity_table(frame, kind, drop)
    extra = extra_table(frame, drop)
    both = pd.concat([table, extra], axis=1).astype(object)
    keys = both.where(both.notna(), None).map(str).agg("\x1f".join, axis=1)
    number = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    config = keys.map(number)
    first = config.drop_duplicates()
    texts = describe(table.loc[first.index], extra.loc[first.index])
    return config, {int(config[i]): texts[i] for i in first.index}
