"""Plugin discovery, failure isolation, duplicates and unknown names."""

from __future__ import annotations

import json
import textwrap
import types

import pytest

import deqbench
from deqbench import plugins
from deqbench.cli import main
from deqbench.errors import PluginConflictError, UnknownNameError
from deqbench.solvers import FixedPoint


def _plugin(name: str, kind: str = "solvers", obj=FixedPoint):
    module = types.ModuleType(name)

    def hook(register):
        register(name + "-thing", obj, description=f"from {name}")

    setattr(module, f"register_{kind}", deqbench.hookimpl(hook))
    return module


def _install_dist(tmp_path, monkeypatch, dist: str, module_source: str, entry: str) -> None:
    """A package 'installed' by a .dist-info folder on sys.path, found by importlib.metadata."""
    site = tmp_path / "site"
    (site / f"{dist}-1.2.3.dist-info").mkdir(parents=True)
    (site / f"{dist}-1.2.3.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n"
    )
    (site / f"{dist}-1.2.3.dist-info" / "entry_points.txt").write_text(
        f"[deqbench]\n{entry} = {dist}_mod\n"
    )
    (site / f"{dist}_mod.py").write_text(textwrap.dedent(module_source))
    monkeypatch.syspath_prepend(str(site))


def test_builtins_register_through_the_hooks(fresh_registry):
    entry = fresh_registry.get("solvers", "fixed-point")
    assert entry.plugin == "deqbench" and entry.obj is FixedPoint
    assert fresh_registry.get("cells", "tanh").plugin == "problems"  # from plugins/, an entry point


def test_in_process_plugin_is_registered(fresh_registry):
    registry = plugins.reset_registry(("mine", _plugin("mine")))
    entry = registry.get("solvers", "mine-thing")
    assert (entry.plugin, entry.description) == ("mine", "from mine")
    assert isinstance(deqbench.get_solver("mine-thing", beta=0.5), FixedPoint)


def test_third_party_entry_point_plugin_is_discovered(tmp_path, monkeypatch, fresh_registry):
    _install_dist(
        tmp_path,
        monkeypatch,
        "thirdparty",
        """
        import deqbench
        from deqbench.solvers import FixedPoint

        class Slow(FixedPoint):
            pass

        @deqbench.hookimpl
        def register_solvers(register):
            register("slow-fp", Slow, description="a third party's solver")
        """,
        "thirdparty",
    )
    registry = plugins.reset_registry()
    entry = registry.get("solvers", "slow-fp")
    assert entry.plugin == "thirdparty" and registry.versions["thirdparty"] == "1.2.3"
    assert type(deqbench.get_solver("slow-fp")).__name__ == "Slow"


def test_broken_plugin_is_recorded_and_list_still_works(tmp_path, monkeypatch, fresh_registry, cli):
    _install_dist(tmp_path, monkeypatch, "broken", "raise ImportError('no such dep: foo')\n", "brk")
    _install_dist(
        tmp_path,
        monkeypatch,
        "badhook",
        """
        import deqbench

        @deqbench.hookimpl
        def register_cells(register):
            register("half", object)
            raise RuntimeError("boom while registering")
        """,
        "badhook",
    )
    registry = plugins.reset_registry()
    errors = {f.plugin: f.error for f in registry.failures}
    assert errors["brk"] == "ImportError: no such dep: foo"
    assert "boom while registering" in errors["badhook"]
    assert "half" not in registry.names("cells")  # a failed hook adds nothing
    assert "fixed-point" in registry.names("solvers")  # the rest still loaded

    result = cli.invoke(main, ["list", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)
    assert {"kind", "name", "plugin", "description"} == set(items[0])
    failed = [i for i in items if i["kind"] == "plugin-error"]
    assert {i["plugin"] for i in failed} == {"brk", "badhook"}
    table = cli.invoke(main, ["list"])
    assert table.exit_code == 0 and "plugin-error" in table.output and "no such dep" in table.output


def test_strict_mode_reraises(tmp_path, monkeypatch, fresh_registry):
    _install_dist(tmp_path, monkeypatch, "broken", "raise ImportError('no such dep: foo')\n", "brk")
    monkeypatch.setenv("DEQBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(ImportError, match="no such dep"):
        plugins.reset_registry()
    monkeypatch.setenv("DEQBENCH_STRICT_PLUGINS", "0")


def test_duplicate_names_name_both_plugins(fresh_registry):
    registry = plugins.reset_registry(("alpha", _plugin("x")), ("beta", _plugin("x")))
    with pytest.raises(PluginConflictError) as info:
        registry.get("solvers", "x-thing")
    assert "'alpha'" in str(info.value) and "'beta'" in str(info.value)
    assert any(f.plugin == "beta" and "'alpha'" in f.error for f in registry.failures)


def test_duplicate_in_strict_mode_raises(monkeypatch, fresh_registry):
    monkeypatch.setenv("DEQBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginConflictError, match="'alpha' and plugin 'beta'"):
        plugins.reset_registry(("alpha", _plugin("x")), ("beta", _plugin("x")))


def test_unknown_name_suggests_close_ones(fresh_registry):
    with pytest.raises(
        UnknownNameError, match=r"unknown solver 'fixed-piont'; did you mean 'fixed-point'"
    ):
        deqbench.get_solver("fixed-piont")
    with pytest.raises(UnknownNameError, match=r"unknown cell 'zzz'; available: .*tanh"):
        deqbench.get_cell("zzz")


def test_list_filters_by_kind(cli, fresh_registry):
    result = cli.invoke(main, ["list", "cells", "--json"])
    assert result.exit_code == 0
    assert {i["kind"] for i in json.loads(result.output)} == {"cells"}


def test_list_plugins_shows_what_each_registered(cli, fresh_registry):
    plugins.reset_registry(("mine", _plugin("mine")))
    result = cli.invoke(main, ["list", "plugins", "--json"])
    assert result.exit_code == 0
    rows = {r["plugin"]: r for r in json.loads(result.output)}
    assert rows["mine"]["registered"] == {"solvers": 1} and rows["mine"]["error"] == ""
    assert rows["problems"]["registered"]["cells"] >= 1


def test_a_torchdeq_name_without_torchdeq_names_the_extra_to_install(
    monkeypatch, fresh_registry, cli
):
    from pathlib import Path

    from deqbench_plugins import torchdeq_adapter

    monkeypatch.setattr(torchdeq_adapter, "_installed", lambda: False)  # as without [compare]
    plugins.reset_registry()
    assert "torchdeq-fixed-point" not in plugins.get_registry().names("solvers")
    suite = Path(__file__).resolve().parents[1] / "suites" / "solvers.toml"
    result = cli.invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "matrix.solver[3]: solver 'torchdeq-fixed-point' is not available" in message
    assert "install the [compare] extra: pip install 'deqbench[compare]'" in message
    assert "did you mean" not in message
    # a name no plugin knows still gets its "did you mean"
    with pytest.raises(UnknownNameError, match="did you mean 'anderson'"):
        plugins.get_registry().get("solvers", "andersen")
