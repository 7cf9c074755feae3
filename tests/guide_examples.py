"""What the plugin-guide tests share: a guide's code blocks, and an example package installed
the way ``pip install -e`` leaves it (its ``src`` and a dist-info with its entry points on
sys.path, so `importlib.metadata` finds it like any distribution), with its own tests run."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deqbench import plugins

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(guide: Path, lang: str) -> list[str]:
    """The guide's fenced code blocks in ``lang``, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", guide.read_text(), flags=re.S)


@contextmanager
def installed(example: Path, tmp_path: Path) -> Iterator[plugins.Registry]:
    """The example installed for the block, in a registry rebuilt from the entry points."""
    project = tomllib.loads((example / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    points = project["entry-points"]["deqbench"]
    (dist / "entry_points.txt").write_text(
        "[deqbench]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
    )
    packages = {value.split(":")[0].split(".")[0] for value in points.values()}
    paths = [str(example / "src"), str(tmp_path)]
    sys.path[:0] = paths
    importlib.invalidate_caches()
    try:
        yield plugins.reset_registry()
    finally:
        for path in paths:
            sys.path.remove(path)
        for module in [m for m in sys.modules if m.split(".")[0] in packages]:
            del sys.modules[module]
        importlib.invalidate_caches()
        plugins.reset_registry()


def run_own_tests(example: Path) -> None:
    """Run the example's ``tests/`` as its author would (``pytest tests``), in this process,
    under the example's own configuration; fail unless every test passes."""
    args = [str(example / "tests"), "-q", "-p", "no:cacheprovider", "--import-mode=importlib"]
    args += ["--rootdir", str(example), "-c", str(example / "pyproject.toml")]
    before = set(sys.modules)
    try:
        code = pytest.main(args)
    finally:  # every example's tests are `tests.test_conformance` to pytest: forget this one's
        for name in set(sys.modules) - before:
            if name == "tests" or name.startswith("tests."):
                del sys.modules[name]
    assert code == pytest.ExitCode.OK, f"{example.name}'s own tests: {code!r}"
