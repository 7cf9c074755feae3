"""The plugin guide's example package, installed for real (as entry-point metadata on sys.path):
it is listed, its solver passes the conformance kit, and the guide's suite validates with it."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from deqbench import get_solver, plugins
from deqbench.suite import load_suite
from deqbench.testing import check_solver, solver_conformance_params

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example-solver"
GUIDE = ROOT / "docs" / "writing-a-solver-plugin.md"


@pytest.fixture
def example_installed(tmp_path):
    """What ``pip install`` leaves behind, minus the copy: the example's ``src`` on sys.path and
    a dist-info with its entry points, so `importlib.metadata` finds it like any distribution."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["deqbench"].items())
    (dist / "entry_points.txt").write_text("[deqbench]\n" + points)
    paths = [str(EXAMPLE / "src"), str(tmp_path)]
    sys.path[:0] = paths
    importlib.invalidate_caches()
    try:
        yield plugins.reset_registry()
    finally:
        for path in paths:
            sys.path.remove(path)
        sys.modules.pop("deqbench_example_solver", None)
        importlib.invalidate_caches()
        plugins.reset_registry()


def test_the_example_is_listed(example_installed):
    entry = example_installed.get("solvers", "momentum")
    assert entry.plugin == "example-solver"
    assert example_installed.versions["example-solver"] == "0.1.0"
    assert not [f for f in example_installed.failures if f.plugin == "example-solver"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_example_passes_the_conformance_kit(example_installed, dtype):
    assert check_solver("momentum", dtype=dtype) == check_solver(get_solver("momentum"))
    params = solver_conformance_params("momentum")
    assert params and not any(p.marks for p in params)  # nothing skipped


def test_the_guides_suite_validates_with_the_example(example_installed, tmp_path):
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), flags=re.S)
    suite_text = next(b for b in blocks if "[suite]" in b)
    path = tmp_path / "my-solver.toml"
    path.write_text(suite_text)
    suite = load_suite(path, registry=example_installed)
    assert {run.solver for run in suite.runs} == {"anderson", "momentum"}


def test_the_guide_shows_the_examples_code():
    source = (EXAMPLE / "src" / "deqbench_example_solver" / "__init__.py").read_text()
    guide = GUIDE.read_text()
    lines = ("class Momentum(Solver):", "monitor.hold_diverged(step, z)", 'register("momentum"')
    for line in lines:
        assert line in source and line in guide
