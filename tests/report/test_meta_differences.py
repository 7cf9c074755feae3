"""`deqbench.report.matching.meta_differences` on the environment capture's fields: the
CUDA stack, the CPU model, numerics settings and imported package versions."""

from __future__ import annotations

import json

from deqbench.report.matching import meta_differences

BASE = {
    "python": "3.11.9",
    "torch": "2.5.0",
    "deqbench": "0.1.0",
    "device": "cuda:0",
    "cpu_model": "AMD EPYC 7763 64-Core Processor",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "gpu_count": 1,
    "cuda": "12.4",
    "cudnn": 90100,
    "nccl": "2.21.5",
    "driver": "550.54.15",
    "git_commit": "aaa",
    "git_dirty": False,
    "numerics_env": {"OMP_NUM_THREADS": None, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
    "torch_flags": {"float32_matmul_precision": "highest", "cudnn_benchmark": False},
    "packages": {"numpy": "2.1.0", "torch": "2.5.0", "scikit-learn": "1.5.0"},
}


def _pair(tmp_path, **changes):
    for name, meta in (("a", BASE), ("b", {**BASE, **changes})):
        (tmp_path / f"{name}.meta.json").write_text(json.dumps(meta))
    return meta_differences(tmp_path / "a.csv", tmp_path / "b.csv")


def test_the_same_environment_warns_nothing_and_a_new_commit_is_not_a_difference(tmp_path):
    assert _pair(tmp_path) == []
    assert _pair(tmp_path, git_commit="bbb", git_dirty=True) == []  # the code under comparison


def test_the_cuda_stack_and_the_hardware(tmp_path):
    found = _pair(tmp_path, cudnn=90300, driver="560.1", gpu_name="NVIDIA A100-SXM4-40GB")
    assert found == [
        "the reports come from different machine: gpu_name 'NVIDIA H100 80GB HBM3' vs "
        "'NVIDIA A100-SXM4-40GB'",
        "the reports come from different versions: cudnn 90100 vs 90300; driver '550.54.15' "
        "vs '560.1'",
    ]


def test_numerics_settings_and_package_versions(tmp_path):
    env = {"OMP_NUM_THREADS": "8", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    flags = {"float32_matmul_precision": "high", "cudnn_benchmark": False}
    # a package only one suite imported is not a difference
    packages = {"numpy": "2.2.0", "torch": "2.5.0", "scipy": "1.14.0"}
    found = _pair(tmp_path, numerics_env=env, torch_flags=flags, packages=packages)
    assert found == [
        "the reports come from different numerics settings: OMP_NUM_THREADS unset vs 8; "
        "torch float32_matmul_precision highest vs high",
        "the reports come from different versions: package numpy 2.1.0 vs 2.2.0",
    ]


def test_a_key_only_one_report_records_is_not_compared(tmp_path):
    older = {k: v for k, v in BASE.items() if k not in ("cudnn", "packages")}
    (tmp_path / "a.meta.json").write_text(json.dumps(older))
    (tmp_path / "b.meta.json").write_text(json.dumps({**BASE, "cudnn": 1}))
    assert meta_differences(tmp_path / "a.csv", tmp_path / "b.csv") == []


def test_many_differences_are_listed_in_part(tmp_path):
    old = {f"pkg{i}": "1.0" for i in range(9)}
    (tmp_path / "a.meta.json").write_text(json.dumps({**BASE, "packages": old}))
    new = {f"pkg{i}": "2.0" for i in range(9)}
    (tmp_path / "b.meta.json").write_text(json.dumps({**BASE, "packages": new}))
    (line,) = meta_differences(tmp_path / "a.csv", tmp_path / "b.csv")
    assert line.count("vs") == 6 and line.endswith("; and 3 more")
