"""`deqbench.measure.environment`: the CUDA stack (null without CUDA), git state, imported
packages and numerics settings, and their place in a real report's ``.meta.json``."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import textwrap
from pathlib import Path

import numpy
import pandas
import pytest
import torch

from deqbench import plugins
from deqbench.cli import main
from deqbench.measure import environment
from deqbench.testing.train_toys import TrainToys

CUDA_FIELDS = ("cuda", "cudnn", "nccl", "driver", "gpu_name", "gpu_count")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only capture")
def test_the_cuda_stack_is_null_without_cuda():
    env = environment.environment()
    assert {key: env[key] for key in CUDA_FIELDS} == dict.fromkeys(CUDA_FIELDS)
    assert set(env["torch_flags"]) == {"float32_matmul_precision", "deterministic_algorithms"}


def test_the_cpu_model_is_the_one_proc_cpuinfo_names():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    names = {
        line.split(":", 1)[1].strip()
        for line in cpuinfo.read_text().splitlines()
        if line.startswith("model name")
    }
    assert environment.cpu_model() in names


def test_numerics_variables_are_recorded_set_or_not():
    env = {"OMP_NUM_THREADS": "3", "TORCH_SHOW_CPP_STACKTRACES": "1", "HOME": "/root"}
    env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    found = environment.numerics_env(env)
    assert found["OMP_NUM_THREADS"] == "3" and found["CUBLAS_WORKSPACE_CONFIG"] is None
    assert found["TORCH_SHOW_CPP_STACKTRACES"] == "1"
    assert found["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "HOME" not in found
    assert set(environment.NUMERICS_VARS) <= set(found)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def test_git_state_of_a_clean_and_a_dirty_tree(tmp_path):
    assert environment.git_state(tmp_path) == dict.fromkeys(
        ("git_commit", "git_dirty", "git_diff_sha256")
    )
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "HEAD").strip()
    clean = environment.git_state(tmp_path)
    assert clean == {"git_commit": head, "git_dirty": False, "git_diff_sha256": None}
    (tmp_path / "a.py").write_text("x = 2\n")
    dirty = environment.git_state(tmp_path)
    diff = _git(tmp_path, "diff", "HEAD")
    assert "+x = 2" in diff
    assert dirty["git_dirty"] is True and dirty["git_commit"] == head
    assert dirty["git_diff_sha256"] == hashlib.sha256(diff.encode()).hexdigest()


def test_imported_packages_name_distributions_and_their_versions():
    found = environment.imported_packages(["numpy", "pandas.core", "json", "no_such_module"])
    assert found == {"numpy": numpy.__version__, "pandas": pandas.__version__}


SUITE = """
[suite]
name = "meta"
kind = "train"
device = "cpu"

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[recipe]
steps = 2
"""


@pytest.fixture
def toys():
    yield plugins.reset_registry(("train-toys", TrainToys()))
    plugins.reset_registry()


def test_a_report_meta_holds_every_field(toys, cli, tmp_path):
    path = tmp_path / "meta.toml"
    path.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "meta.csv"
    result = cli.invoke(main, ["run", str(path), "--out", str(out), "--max-eval-batches", "1"])
    assert result.exit_code == 0, result.output
    meta = json.loads(out.with_name("meta.meta.json").read_text())
    expected = set(environment.environment()) | {"packages", "git_commit", "cpu_model"}
    assert expected <= set(meta)
    if not torch.cuda.is_available():
        assert {key: meta[key] for key in CUDA_FIELDS} == dict.fromkeys(CUDA_FIELDS)
    # the versions of the packages the suite imported, as installed
    assert meta["packages"]["torch"] == importlib.metadata.version("torch")
    assert meta["packages"]["numpy"] == numpy.__version__
    assert meta["numerics_env"].keys() >= set(environment.NUMERICS_VARS)
