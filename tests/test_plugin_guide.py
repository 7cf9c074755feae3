"""The plugin guide's example package, installed for real (as entry-point metadata on sys.path):
it is listed, its solver passes the conformance kit, and the guide's suite validates with it."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch
from guide_examples import run_own_tests

from deqbench import get_solver, plugins
from deqbench.report.results import read_report
from deqbench.suite.load import load_suite
from deqbench.testing import check_solver, run_solver_check, solver_conformance_params

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


def _guide_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return next(b for b in blocks if marker in b)


def test_the_guides_solver_code_runs_as_written(tmp_path, monkeypatch):
    """The guide's section 3, saved as a module of its own and imported with nothing added,
    is a working solver: it passes the conformance kit and solves a contraction."""
    code = _guide_block("class Momentum(Solver):")
    source = (EXAMPLE / "src" / "deqbench_example_solver" / "__init__.py").read_text()
    assert code in source  # the package is the guide's code plus a docstring
    (tmp_path / "guide_momentum.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("guide_momentum")
    try:
        assert check_solver(module.Momentum(mu=0.3))
        a = 0.5 * torch.eye(4, dtype=torch.float64)
        b = torch.arange(8, dtype=torch.float64).reshape(2, 4)
        result = module.Momentum()(lambda z: z @ a.T + b, torch.zeros_like(b), tol=1e-10)
        assert torch.allclose(result.z, 2 * b, atol=1e-8)  # z = z/2 + b
    finally:
        sys.modules.pop("guide_momentum", None)


def test_the_guides_conformance_snippet_runs(example_installed):
    exec(compile(_guide_block('check_solver("momentum")'), str(GUIDE), "exec"), {})


def test_the_guides_problem_separates_solvers():
    """The guide's suite problem is hard for plain iteration, easy for Anderson."""
    from deqbench.deq import bind
    from deqbench_plugins.problems import TanhCell

    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), flags=re.S)
    spec = tomllib.loads(next(b for b in blocks if "[suite]" in b))
    problem = spec["problems"][0]
    cell = TanhCell(**problem["options"]).double()
    x = torch.randn(8, *problem["input_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        bound = bind(cell, x.double())
    nfe = {}
    for name in ("fixed-point", "anderson"):
        result = get_solver(name)(bound.f, bound.z0, max_iter=100, tol=1e-4)
        nfe[name] = (result.nfe, result.status.value)
    assert nfe["fixed-point"] == (100, "max_iter"), nfe
    assert nfe["anderson"][1] == "converged" and nfe["anderson"][0] < 60, nfe


def test_its_own_tests_pass(example_installed):
    run_own_tests(EXAMPLE)


def test_the_guides_commands_run(example_installed, cli, tmp_path):
    """Sections 4 and 5: list, validate and run, as the guide writes them."""
    from deqbench.cli import main

    listed = cli.invoke(main, ["list", "solvers"])
    assert re.search(r"momentum\s+│\s+example-solver", listed.output), listed.output
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), flags=re.S)
    suite = tmp_path / "my-solver.toml"
    suite.write_text(next(b for b in blocks if "[suite]" in b))
    out = tmp_path / "reports" / "my-solver.csv"
    assert cli.invoke(main, ["validate", str(suite)]).exit_code == 0
    # In this process: the rows are a worker's, without a worker process's start-up.
    result = cli.invoke(
        main, ["run", str(suite), "--out", str(out), "--set", "suite.isolate=false"]
    )
    assert result.exit_code == 0, result.output
    rows = read_report(out)
    assert list(rows.solver) == ["anderson", "momentum"] and rows.nfe.min() > 0


def _broken_copies():
    """The four broken copies of the example that section 1 quotes the kit on."""
    from deqbench_example_solver import Momentum

    class NoReturn(Momentum):  # goes on after observe returned True
        def solve(self, f, z0, monitor):
            z = z0
            for _ in range(monitor.budget + 1):
                fz = f(z)
                monitor.observe(z, fz)
                z = monitor.hold_diverged(fz.clone(), z)

    class FirstRow(Momentum):  # observes only the first row
        def solve(self, f, z0, monitor):
            z = z0
            while not monitor.observe(z[:1], (fz := f(z))[:1]):
                z = fz

    class InPlace(Momentum):  # adds the step into the observed z
        def solve(self, f, z0, monitor):
            z = z0.clone()
            while not monitor.observe(z, (fz := f(z))):
                z.add_(fz - z)

    class NoHold(Momentum):  # skips hold_diverged
        def solve(self, f, z0, monitor):
            z = z0
            while not monitor.observe(z, (fz := f(z))):
                z = fz

    return {"NoReturn": NoReturn, "FirstRow": FirstRow, "InPlace": InPlace, "NoHold": NoHold}


def _rounded(text: str) -> str:
    return re.sub(r"\d+\.\d+", lambda m: f"{float(m.group()):.6g}", text)


def test_the_guides_rule_breaking_messages_are_the_kits(example_installed):
    shown = next(b for b in re.findall(r"```text\n(.*?)```", GUIDE.read_text(), flags=re.S))
    lines = shown.strip().splitlines()
    copies = _broken_copies()
    assert len(lines) == len(copies)
    for line in lines:
        name, check = re.match(r"solver '(\w+)' fails '(\w+)'", line).groups()
        with pytest.raises(AssertionError) as caught:
            run_solver_check(copies[name](), check)  # the kit names the class
        assert _rounded(str(caught.value)) == _rounded(line)


def test_fn_and_the_solver_api_come_from_deqbench():
    import deqbench
    from deqbench.solvers.base import Fn

    assert deqbench.Fn is Fn and "Fn" in deqbench.__all__
    assert deqbench.Monitor and deqbench.Solver
