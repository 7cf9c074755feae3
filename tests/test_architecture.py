"""The package's shape (docs/architecture.md): short modules, few at the top, no import circle
(imports inside functions included), and layers that import only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deqbench

PACKAGE = Path(deqbench.__file__).parent
MAX_LINES = 400
MAX_TOP_LEVEL = 12  #: modules directly in deqbench/, besides __init__ and __main__

#: Each layer and the layers below it that it may import (the core is below everything).
LAYERS = {
    "cli": {"execution", "runs", "suite", "report", "measure"},
    "execution": {"runs", "suite", "report", "measure"},
    "runs": {"suite", "report", "measure", "execution.checkpoint", "execution.distributed"},
    "suite": {"report", "measure"},
    "report": {"measure"},
    "measure": set(),
    # The conformance kits and toys for plugin authors: beside the stack, importing any of it.
    "testing": {"execution", "runs", "suite", "report", "measure"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every deqbench module ``name`` imports, at the top or inside a function (not under
    TYPE_CHECKING): ``from a.b import c`` counts a.b.c when that is a module, else a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_is_over_400_lines():
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_few_modules_at_the_top():
    top = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= MAX_TOP_LEVEL, sorted(top)


def test_no_import_circle(graph):
    """Tarjan's strongly connected components of the import graph: each must be one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert circles == []


def _layer(module: str) -> str:
    """The layer of a module: its package under deqbench/, ``cli`` for the command line, and
    ``core`` for the rest (cells, solvers, estimators, the layer, models, data, plugins)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "__main__":
        return "cli"
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "core"


def test_layers_import_only_downwards(graph):
    breaches = []
    for module, imported in graph.items():
        layer = _layer(module)
        for other in imported:
            target = _layer(other)
            if target in ("core", layer):
                continue
            rest = other.split(".", 1)[1]
            allowed = LAYERS.get(layer, set())
            if layer == "core" or not any(
                rest == a or rest.startswith(a + ".") or a == target for a in allowed
            ):
                breaches.append(f"{module} → {other}")
    assert breaches == []
