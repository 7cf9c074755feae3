"""deqbench.measure.openmp: the run command waits passively on a busy machine, leaves a user's
choice and a
library caller's environment alone, and a report says how torch's OpenMP threads waited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from deqbench.measure import openmp


@pytest.fixture
def unset(monkeypatch):
    for name in openmp.SETTINGS:  # set, then deleted: restored as they were afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_the_command_and_the_library_leave_the_environment_alone():
    # Only `deqbench run` chooses (before torch loads): neither the entry point's other
    # commands nor a solve set anything, in this process or for workers.
    code = f"SETTINGS = {openmp.SETTINGS!r}\n" + textwrap.dedent(
        """
        import json, os, sys
        import deqbench.cli
        sys.argv = ["deqbench", "--help"]
        try:
            deqbench.cli.main()
        except SystemExit:
            pass
        import torch
        from deqbench import get_solver
        get_solver("anderson")(lambda z: 0.5 * z, torch.ones(64, 1024), max_iter=5)
        print(json.dumps({name: os.environ.get(name) for name in SETTINGS}))
        """
    )
    environ = {k: v for k, v in os.environ.items() if k not in openmp.SETTINGS}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict.fromkeys(openmp.SETTINGS)


def test_a_reports_metadata_says_how_threads_waited(unset):
    import torch

    from deqbench.report.results import metadata

    unset.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert metadata({}, [], torch.device("cpu"), "cpu")["openmp_wait"] == "OMP_WAIT_POLICY=PASSIVE"


def test_describe_gives_the_settings_or_the_default(unset):
    assert openmp.describe().startswith("libgomp's default (spin, then sleep)")
    unset.setenv("GOMP_SPINCOUNT", "1000")
    unset.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert openmp.describe().startswith("OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=1000")


def test_busy_cores_from_two_readings_of_the_cpu_times():
    readings = iter([(100, 1000), (150, 1100)])  # 50 of 100 jiffies busy
    cores = openmp.busy_cores(0.0, lambda: next(readings))
    assert cores == 0.5 * (os.cpu_count() or 1)
    assert openmp.busy_cores(0.0, lambda: None) is None


_CHOOSE = """
import json, os, sys
from deqbench.measure import openmp
print(json.dumps([openmp.choose_wait_policy(lambda: {cores}), os.environ.get("OMP_WAIT_POLICY")]))
"""


@pytest.mark.parametrize(
    ("cores", "user", "policy"),
    [(1.2, None, "PASSIVE"), (0.1, None, None), (1.2, "ACTIVE", "ACTIVE"), (None, None, None)],
)
def test_the_run_command_waits_passively_only_when_other_work_is_busy(cores, user, policy):
    environ = {k: v for k, v in os.environ.items() if k not in openmp.SETTINGS}
    if user:
        environ["OMP_WAIT_POLICY"] = user
    done = subprocess.run(  # a fresh process: torch not loaded, as in the command
        [sys.executable, "-c", _CHOOSE.format(cores=cores)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=True,
    )
    said, got = json.loads(done.stdout)
    assert got == policy
    if policy == "PASSIVE":
        assert said == (
            "OMP_WAIT_POLICY=PASSIVE (set by deqbench: 1.2 cores busy with other work at the start)"
        )


def test_nothing_is_chosen_once_torch_is_loaded(unset):
    import torch  # noqa: F401

    openmp.choose_wait_policy(lambda: 2.0)
    assert "OMP_WAIT_POLICY" not in os.environ
