"""Wall-time limits as suites write them: ``"90s"``, ``"45m"``, ``"2h"``, ``"1h30m"`` or seconds.

Torch-free, so validating a suite stays fast.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)\s*([dhms]))", re.IGNORECASE)
_FORMS = "a number of seconds or a duration like '90s', '45m', '2h', '1h30m' or '1.5h'"


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``: a number of seconds, or ``"90s"``, ``"45m"``, ``"2h"``, ``"1h30m"``,
    ``"1.5h"``, ``"2d"``. Anything else, or a duration that is not positive, is a `ValueError`."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"invalid duration {text!r}: expected {_FORMS}")
    if isinstance(text, str):
        compact = text.strip()
        try:
            seconds = float(compact)
        except ValueError:
            parts = _DURATION.findall(compact)
            if not parts or _DURATION.sub("", compact).strip():
                raise ValueError(f"invalid duration {text!r}: expected {_FORMS}") from None
            seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in parts)
    else:
        seconds = float(text)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"invalid duration {text!r}: expected a positive, finite time ({_FORMS})")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``: ``7200 → "2h"``, ``5400 → "1h30m"``, ``1.5 → "1.5s"``."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _positive_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected {_FORMS}")
    return parse_duration(value)


#: A suite key holding a wall-time limit, in seconds once validated. Its schema says what a suite
#: writes (`deqbench.suite.overrides` describes a key's type from it when a ``--set`` does not
#: parse).
Duration = Annotated[
    float,
    BeforeValidator(_positive_duration),
    WithJsonSchema({"type": "string", "format": "duration", "examples": ["2h", "90s"]}),
]
