"""Loading a suite of any kind: read the file, apply ``--set`` overrides, then hand it to the
registered kind of run its ``[suite] kind`` names (`deqbench.runs.kind.RunKind.load`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deqbench.errors import ConfigError, did_you_mean
from deqbench.plugins import Registry, get_registry
from deqbench.report.schema import DEFAULT_KIND
from deqbench.suite.overrides import apply_override, read_suite_file


def load_suite(
    path: str | Path, overrides: Iterable[str] = (), registry: Registry | None = None
) -> Any:
    """Read, override, validate and expand a suite; any problem raises one `ConfigError`.
    The suite is whatever its kind's ``load`` makes of it (a `deqbench.suite.solve.Suite`,
    a `deqbench.suite.train.TrainSuite`, or a plugin kind's)."""
    path = Path(path)
    registry = registry or get_registry()
    data = read_suite_file(path)
    for item in overrides:  # an earlier override may have changed the kind
        name = _kind(data)  # an unknown one is refused below; till then, the default's schema
        known = isinstance(name, str) and name in registry.names("run_kinds")
        kind = registry.get("run_kinds", name if known else DEFAULT_KIND).obj
        apply_override(data, item, path, kind.schema)
    return _lookup(registry, _kind(data), path).load(path, data, registry)


def _kind(data: dict[str, Any]) -> Any:
    """The file's ``[suite] kind`` as written (any TOML value), the default when it gives none."""
    info = data.get("suite")
    return info.get("kind", DEFAULT_KIND) if isinstance(info, dict) else DEFAULT_KIND


def _lookup(registry: Registry, name: Any, path: Path) -> Any:
    """The registered kind of run ``name``; unknown, a `ConfigError` with "did you mean"."""
    names = registry.names("run_kinds")
    if isinstance(name, str) and name in names:
        return registry.get("run_kinds", name).obj
    raise ConfigError(f"{path}: suite.kind: unknown kind {name!r}{did_you_mean(str(name), names)}")
