"""A fast start: `deqbench --help` and `deqbench list` import neither torch nor plugin targets.

The checks look at ``sys.modules`` in a fresh interpreter rather than at the clock, so they do
not depend on the machine's load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import pytest

import deqbench
from deqbench import plugins
from deqbench.builtins import GRADIENTS, SOLVERS
from deqbench.cli import main
from deqbench.plugins import PluginImportError

#: Modules that only a command that runs something may import.
HEAVY = ("torch", "torchdeq", "pandas", "deqbench_plugins.problems", "deqbench.solvers")


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_and_list_import_no_torch_nor_plugin_targets():
    seen = _fresh(
        f"""
        import json, sys
        from click.testing import CliRunner
        import deqbench.cli

        heavy = {HEAVY!r}
        out = {{}}
        for args in (["--help"], ["list"], ["list", "--json"], ["list", "plugins"]):
            result = CliRunner().invoke(deqbench.cli.main, args)
            loaded = [m for m in heavy if m in sys.modules]
            out[" ".join(args)] = [result.exit_code, loaded, result.output]
        print(json.dumps(out))
        """
    )
    for args, (code, loaded, output) in seen.items():
        assert code == 0, (args, output)
        assert loaded == [], f"`deqbench {args}` imported {loaded}"
    listed = {(item["kind"], item["name"]) for item in json.loads(seen["list --json"][2])}
    # Listing costs no import, yet shows every built-in and plugin item.
    assert {("solvers", name) for name, *_ in SOLVERS} <= listed
    assert {("gradients", name) for name, *_ in GRADIENTS} <= listed
    assert {("cells", "tanh"), ("cells", "conv")} <= listed


def test_import_deqbench_is_light_and_its_names_still_resolve():
    seen = _fresh(
        """
        import json, sys
        import deqbench

        light = "torch" not in sys.modules and callable(deqbench.hookimpl)
        light = light and "torch" not in sys.modules
        deq = deqbench.DEQ
        print(json.dumps([light, deq.__module__, "torch" in sys.modules]))
        """
    )
    assert seen == [True, "deqbench.deq", True]


def test_every_public_name_resolves():
    names = {}
    exec("from deqbench import *", names)
    assert set(deqbench.__all__) <= set(names)
    assert set(deqbench.__all__) <= set(dir(deqbench))
    assert deqbench.get_solver is plugins.get_solver
    assert deqbench.solvers.Solver is deqbench.Solver  # a submodule, bound as before
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = deqbench.not_a_name


def test_builtins_are_strings_that_resolve_to_the_solver_classes(fresh_registry):
    from deqbench import gradients, solvers

    for kind, table, builtin in (
        ("solvers", SOLVERS, solvers.BUILTIN),
        ("gradients", GRADIENTS, gradients.BUILTIN),
    ):
        assert [(n, d) for n, _, d in table] == [(n, d) for n, _, d in builtin]
        for (name, target, description), (_, cls, _) in zip(table, builtin, strict=True):
            entry = fresh_registry.get(kind, name)
            assert (entry.target, entry.description, entry.plugin) == (
                target,
                description,
                "deqbench",
            )
            assert entry.obj is cls


def test_plugin_cells_resolve_to_the_problem_classes(fresh_registry):
    from deqbench_plugins.problems import ConvCell, TanhCell

    assert fresh_registry.get("cells", "tanh").obj is TanhCell
    assert fresh_registry.get("cells", "conv").obj is ConvCell
    assert isinstance(deqbench.get_cell("tanh", dim=4), TanhCell)


def test_torchdeq_classes_keep_their_old_address():
    pytest.importorskip("torchdeq")
    from deqbench_plugins import torchdeq_adapter, torchdeq_solvers

    assert torchdeq_adapter.TorchDEQAnderson is torchdeq_solvers.TorchDEQAnderson
    with pytest.raises(AttributeError):
        _ = torchdeq_adapter.missing


def _lazy_plugin(targets: dict[str, str]) -> types.ModuleType:
    module = types.ModuleType("lazy")

    def register_solvers(register):
        for name, target in targets.items():
            register(name, target, description=f"{name} by string")

    module.register_solvers = deqbench.hookimpl(register_solvers)
    return module


def test_a_target_that_fails_to_import_names_plugin_and_target(fresh_registry, cli):
    targets = {
        "gone": "deqbench_no_such_module:Solver",
        "typo": "deqbench.solvers.anderson:Andersn",
    }
    plugins.reset_registry(("lazy", _lazy_plugin(targets)))
    # Listing does not import the targets, so a broken one is still listed.
    listed = cli.invoke(main, ["list", "solvers", "--json"])
    assert listed.exit_code == 0, listed.output
    names = {item["name"]: item["plugin"] for item in json.loads(listed.output)}
    assert names["gone"] == names["typo"] == "lazy"
    for name, target in targets.items():
        with pytest.raises(PluginImportError) as info:
            deqbench.get_solver(name)
        message = str(info.value)
        assert "\n" not in message
        assert f"solver {name!r} of plugin 'lazy'" in message and repr(target) in message
        assert isinstance(info.value, deqbench.DeqbenchError)  # the CLI prints it as one line


def test_the_cli_reports_a_broken_target_in_one_line(fresh_registry, cli, tmp_path):
    plugins.reset_registry(("lazy", _lazy_plugin({"gone": "deqbench_no_such_module:Solver"})))
    suite = tmp_path / "s.toml"
    suite.write_text(
        '[suite]\nname = "lazy"\n\n[[problems]]\nname = "p"\ncell = "tanh"\nbatch_size = 2\n'
        'input_shape = [8]\noptions = { dim = 8 }\n\n[matrix]\nsolver = ["gone"]\n'
    )
    result = cli.invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert str(suite) in line and "plugin 'lazy'" in line
    assert "'deqbench_no_such_module:Solver'" in line and "Traceback" not in result.output
