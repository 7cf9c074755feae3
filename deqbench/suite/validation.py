"""What every kind of suite shares to validate its file: the strict table base, sweeps, one-line
descriptions of pydantic errors, and checks of registered names and their options.

Errors name the file, the key path and what was expected, as one `ConfigError` line.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from deqbench.errors import DeqbenchError, did_you_mean
from deqbench.plugins import Registry

#: Raises the `ConfigError` of a key: ``fail(key, what_is_wrong)``.
Fail = Callable[[str, Exception | str], None]


def _as_list(value: Any) -> Any:
    """A scalar in a matrix means a one-element sweep."""
    return value if isinstance(value, list) else [value]


Sweep = Annotated[list[Any], BeforeValidator(_as_list), Field(min_length=1)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- describing pydantic errors -------------------------------------------------------------------
def describe_validation(exc: ValidationError, root: type[BaseModel], limit: int = 8) -> str:
    """Every error of validating a file against ``root`` (any pydantic model class), on one
    line: 'key: what was expected, got what'. Unknown keys come first, each with its "did you
    mean", since a misspelt key is usually also the cause of a "missing required key"."""
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    parts = [_describe_one(err, root) for err in errors[:limit]]
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    if len(parts) == 1:
        return parts[0]
    return f"{len(errors)} problems: " + " ".join(f"({i}) {p}" for i, p in enumerate(parts, 1))


def _describe_one(err: Any, root: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    if err["type"] == "extra_forbidden":
        parent = _fields_at(loc[:-1], root)
        hint = did_you_mean(str(loc[-1]), parent) if parent else ""
        return f"{_loc(loc)}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{_loc(loc)}: missing required key"
    msg = err["msg"][0].lower() + err["msg"][1:]
    return f"{_loc(loc)}: {msg}, got {err['input']!r}"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    model: type[BaseModel] = root
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


# -- registered names and their options -----------------------------------------------------------
def lookup(registry: Registry, kind: str, name: str, key: str, fail: Fail) -> Any:
    """The registered ``kind`` object ``name``; an unknown name fails at ``key``."""
    try:
        return registry.get(kind, name).obj
    except DeqbenchError as exc:
        fail(key, exc)


def check_options(factory: Any, options: dict, key: str, fail: Fail, build: bool = False) -> Any:
    """``options`` are ones ``factory`` takes; with ``build``, it also accepts their values
    (it is called with them) and what it built is returned (None without ``build``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if params and not takes_any:
        for name in options:
            if name not in params:
                fail(f"{key}.{name}", f"unknown option{did_you_mean(name, params)}")
    if not build:
        return None
    try:
        return factory(**options)
    except (TypeError, ValueError, DeqbenchError) as exc:
        fail(key, f"{_sentence(exc)} (options {options})")


def check_inverse_pairing(
    registry: Registry,
    solvers: list[tuple[str, Any]],
    gradients: list[tuple[str, Any]],
    key: str,
    fail: Fail,
) -> None:
    """Every gradient (name, the object `check_options` built) that reuses the forward solver's
    inverse-Jacobian estimate (``needs_inverse``: shine, refine from shine) meets only solvers
    (name, built object) that offer one (``offers_inverse``: broyden)."""
    needing = [name for name, gradient in gradients if getattr(gradient, "needs_inverse", False)]
    if not needing:
        return
    for name, solver in solvers:
        if not getattr(solver, "offers_inverse", False):
            offering = [n for n in registry.names("solvers") if _offers(registry, n)]
            fail(
                key,
                f"gradient {needing[0]!r} reuses the forward solver's inverse-Jacobian estimate, "
                f"and solver {name!r} offers none; expected a solver that offers one "
                f"({', '.join(offering) or 'none is registered'})",
            )


def _offers(registry: Registry, name: str) -> bool:
    try:
        return bool(getattr(registry.get("solvers", name).obj, "offers_inverse", False))
    except Exception:  # a plugin that fails to load offers nothing here
        return False


def _sentence(exc: Exception) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()


def _product(options: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the swept ``options``, as one dict each (one empty dict for none)."""
    keys = list(options)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*options.values())]
