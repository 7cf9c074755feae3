"""The plugin manager: entry-point discovery, one registry per kind, lookups with "did you mean".

Plugins load one at a time. A plugin that fails to import or to register is recorded as a
`PluginFailure` and the rest still load; ``DEQBENCH_STRICT_PLUGINS=1`` re-raises instead.

Besides installed entry points, ``DEQBENCH_PLUGINS`` names plugins to load by import path,
comma-separated ``module`` or ``module:attribute`` (a plugin in a local file needs no package);
it reaches every process of a job, torchrun's ranks included.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from deqbench import hookspecs
from deqbench.errors import DeqbenchError, PluginConflictError, UnknownNameError, did_you_mean

ENTRY_POINT_GROUP = "deqbench"
ENV_PLUGINS = "DEQBENCH_PLUGINS"
CORE_PLUGIN = "deqbench"


class PluginImportError(DeqbenchError):
    """A ``"module:attr"`` entry whose target failed to import at first use."""


def singular(kind: str) -> str:
    """A registry kind as one thing: "solvers" → "solver", "run_kinds" → "run kind"."""
    return kind[:-1].replace("_", " ")


@dataclass(frozen=True)
class Entry:
    """One registered thing.

    ``target`` is the object itself, or a ``"module:attribute"`` string imported on first use of
    `obj`: a plugin that registers strings costs nothing to list (no torch import).
    """

    kind: str
    name: str
    target: Any
    plugin: str
    description: str = ""
    details: str = ""  #: the longer account `deqbench list -v` shows (provenance, say)

    @functools.cached_property
    def obj(self) -> Any:
        """The registered object, imported now if it was registered as ``"module:attribute"``."""
        if not isinstance(self.target, str):
            return self.target
        module, sep, attr = self.target.partition(":")
        if not sep:
            raise TypeError(
                f"{singular(self.kind)} {self.name!r}: {self.target!r} is not module:attr"
            )
        try:
            return functools.reduce(getattr, attr.split("."), importlib.import_module(module))
        except Exception as exc:  # the plugin is broken, not the user's input: say which one
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
            raise PluginImportError(
                f"{singular(self.kind)} {self.name!r} of plugin {self.plugin!r}: "
                f"cannot import {self.target!r} ({reason})"
            ) from exc


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to import or register, or that clashed with another."""

    plugin: str
    error: str


def _strict() -> bool:
    return os.environ.get("DEQBENCH_STRICT_PLUGINS", "") not in ("", "0")


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in hookspecs.KINDS}
        self._conflicts: dict[tuple[str, str], str] = {}
        self.failures: list[PluginFailure] = []
        self.versions: dict[str, str] = {}

    # -- loading -----------------------------------------------------------------------------
    def add_plugin(self, plugin: object, name: str, version: str = "") -> None:
        """Register one plugin (a module or object with hookimpls) and collect its items."""
        try:
            self._pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(name, exc)
            return
        self.versions[name] = version
        for kind in hookspecs.KINDS:
            hook = getattr(self._pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                if impl.plugin_name == name:
                    self._collect(kind, name, impl.function)

    def load_entry_points(self) -> None:
        """Load every plugin of the ``deqbench`` entry-point group, one at a time."""
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                module = ep.load()
            except Exception as exc:
                self._fail(ep.name, exc)
                continue
            version = ep.dist.version if ep.dist is not None else ""
            self.add_plugin(module, ep.name, version)

    def load_environment(self) -> None:
        """Load the plugins that ``DEQBENCH_PLUGINS`` names (``module[:attribute]``, commas)."""
        for spec in filter(None, (s.strip() for s in os.environ.get(ENV_PLUGINS, "").split(","))):
            module, _, attr = spec.partition(":")
            try:
                plugin = importlib.import_module(module)
                if attr:
                    plugin = functools.reduce(getattr, attr.split("."), plugin)
                    plugin = plugin() if isinstance(plugin, type) else plugin
            except Exception as exc:
                self._fail(spec, exc)
                continue
            self.add_plugin(plugin, spec)

    def _collect(self, kind: str, plugin: str, hook: Callable[..., Any]) -> None:
        staged: list[Entry] = []

        def register(name: str, obj: Any, description: str = "", details: str = "") -> None:
            staged.append(Entry(kind, name, obj, plugin, description, details))

        try:
            hook(register=register)
        except Exception as exc:
            self._fail(plugin, exc)
            return
        # Only a hook that finished adds anything: no half-registered plugins.
        for entry in staged:
            self._add(entry)

    def _add(self, entry: Entry) -> None:
        table = self._entries[entry.kind]
        key = (entry.kind, entry.name)
        old = table.get(entry.name)
        if old is None and key not in self._conflicts:
            table[entry.name] = entry
            return
        if old is not None:
            msg = (
                f"{singular(entry.kind)} {entry.name!r} is registered by both plugin "
                f"{old.plugin!r} and plugin {entry.plugin!r}; uninstall or rename one"
            )
        else:  # a third plugin joins an existing clash
            msg = f"{self._conflicts[key]} (plugin {entry.plugin!r} registers it too)"
        if _strict():
            raise PluginConflictError(msg)
        table.pop(entry.name, None)
        self._conflicts[key] = msg
        self.failures.append(PluginFailure(entry.plugin, msg))

    def _fail(self, plugin: str, exc: Exception) -> None:
        if _strict():
            raise exc
        self.failures.append(PluginFailure(plugin, f"{type(exc).__name__}: {exc}"))

    # -- lookups -----------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Entry:
        """The entry of ``kind`` called ``name``; an `UnknownNameError` with suggestions if none."""
        if (kind, name) in self._conflicts:
            raise PluginConflictError(self._conflicts[(kind, name)])
        try:
            return self._entries[kind][name]
        except KeyError:
            # A plugin may know the name but not register it here (an optional dependency
            # missing): its reason beats a "did you mean" that points elsewhere.
            why = self._pm.hook.explain_unknown(kind=kind, name=name)
            if why:
                raise UnknownNameError(
                    f"{singular(kind)} {name!r} is not available: {why}"
                ) from None
            hint = did_you_mean(name, self._entries[kind])
            raise UnknownNameError(f"unknown {singular(kind)} {name!r}{hint}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kinds: Iterable[str] = hookspecs.KINDS) -> list[Entry]:
        return [e for kind in kinds for _, e in sorted(self._entries[kind].items())]


def _core_registry() -> Registry:
    from deqbench import __version__, builtins

    registry = Registry()
    registry.add_plugin(builtins, CORE_PLUGIN, __version__)
    return registry


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry: the core's built-ins plus every entry-point plugin."""
    global _registry
    if _registry is None:
        registry = _core_registry()
        registry.load_entry_points()
        registry.load_environment()
        _registry = registry
    return _registry


_in_process: tuple[tuple[str, object], ...] = ()


def reset_registry(*extra: tuple[str, object]) -> Registry:
    """Rebuild the registry, adding ``(name, plugin)`` pairs in-process (tests, notebooks).
    They also reach the worker process of each isolated run (`in_process_plugins`), so they
    must be picklable: a module-level class's instance is."""
    global _registry, _in_process
    _registry = None
    registry = get_registry()
    for name, plugin in extra:
        registry.add_plugin(plugin, name)
    _in_process = tuple(extra)
    return registry


def in_process_plugins() -> tuple[tuple[str, object], ...]:
    """The plugins the last `reset_registry` added in-process."""
    return _in_process


def lookup(kind: str, name: str) -> Entry:
    return get_registry().get(kind, name)


def get_solver(name: str, **options: Any):
    """A solver instance of the registered ``name`` with ``options``."""
    return lookup("solvers", name).obj(**options)


def get_gradient(name: str, **options: Any):
    """A gradient estimator of the registered ``name`` with ``options``."""
    return lookup("gradients", name).obj(**options)


def get_cell(name: str, **options: Any):
    """A cell module of the registered ``name`` built with ``options``."""
    return lookup("cells", name).obj(**options)


def get_run_kind(name: str):
    """The registered `deqbench.runs.kind.RunKind` called ``name`` (``[suite] kind``)."""
    return lookup("run_kinds", name).obj
