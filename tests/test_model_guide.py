"""The model guide's example package, installed as entry-point metadata on sys.path: its code is
the guide's code as written, it is listed, its cell passes the conformance kit, its model trains."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch
from guide_examples import run_own_tests

from deqbench import plugins

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example-model"
GUIDE = ROOT / "docs" / "writing-a-model-plugin.md"
PKG = EXAMPLE / "src" / "deqbench_example_model"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


@pytest.fixture
def example_installed(tmp_path):
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
        for mod in [m for m in sys.modules if m.startswith("deqbench_example_model")]:
            sys.modules.pop(mod, None)
        importlib.invalidate_caches()
        plugins.reset_registry()


def test_the_package_is_the_guides_code():
    python = _blocks("python")
    for path in (PKG / "__init__.py", PKG / "model.py", PKG / "heads.py"):
        body = path.read_text().split("\n", 2)[2].lstrip("\n")  # minus the docstring line
        assert body in python, path.name
    assert 'example-model = "deqbench_example_model"' in _blocks("toml")[0]


def test_listed_conforms_and_trains(example_installed, cli):
    from deqbench.cli import main

    assert example_installed.get("models", "gated-conv-small").plugin == "example-model"
    assert example_installed.get("cells", "gated-conv").plugin == "example-model"
    assert "gated-conv-small" in cli.invoke(main, ["list", "models"]).output
    snippet = next(b for b in _blocks("python") if "check_cell(" in b)
    exec(compile(snippet, str(GUIDE), "exec"), {})  # the guide's conformance snippet, as written
    torch.manual_seed(0)
    model = example_installed.get("models", "gated-conv-small").obj(num_classes=3)
    model(torch.randn(2, 3, 16, 16)).logsumexp(1).sum().backward()
    assert model.stats.forward.nfe >= 1 and model.stats.backward is not None
    assert all(p.grad is not None for p in model.parameters())


def test_its_own_tests_pass(example_installed):
    run_own_tests(EXAMPLE)


def test_the_guides_head_serves_its_model_and_mdeq(example_installed, cli):
    """Section 6's [model] table builds, with the head on the example model and on an MDEQ."""
    from deqbench.cli import main

    assert "pooled-linear" in cli.invoke(main, ["list", "heads"]).output
    table = tomllib.loads(next(b for b in _blocks("toml") if "[model]" in b))["model"]
    factory = example_installed.get("models", table["name"]).obj
    model = factory(
        num_classes=5, head=table["head"], head_options=table["head_options"], **table["options"]
    )
    assert model.head.dropout.p == 0.1 and model.head.linear.in_features == 16
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    mdeq = example_installed.get("models", "mdeq-cpu-small").obj
    head = mdeq(num_classes=5, image_size=8, head="pooled-linear").head
    assert head.linear.in_features == 16 + 32  # one count per resolution, summed
