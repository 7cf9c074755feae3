"""What a report's numbers depend on besides the code: the CUDA stack, the hardware, the git
tree, the imported packages and the settings that change numerics (``.meta.json``).

Every field is present in every capture, null where it does not apply (the CUDA stack on a
machine without CUDA, git outside a checkout), so two captures always compare key by key.
Nothing here creates a CUDA context: the GPU's name and driver come from ``nvidia-smi``, which
a suite process can ask without taking GPU memory from its runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

#: Environment variables that change results or their timing, recorded whether set or not
#: (null when unset); every ``TORCH_*`` and ``PYTORCH_*`` variable that is set is added.
NUMERICS_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_LAUNCH_BLOCKING",
    "NVIDIA_TF32_OVERRIDE",
)
_NUMERICS_PREFIXES = ("TORCH_", "PYTORCH_")


def environment() -> dict[str, Any]:
    """The CUDA stack, GPUs, CPU model, git state, numerics settings (not the packages:
    `imported_packages`, asked at the end of a suite when the runs have imported theirs)."""
    cuda = torch.cuda.is_available()
    gpus = _nvidia_smi() if cuda else None
    return {
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": _nccl_version() if cuda else None,
        "driver": gpus[0][1] if gpus else None,
        "gpu_name": gpus[0][0] if gpus else None,
        "gpu_count": torch.cuda.device_count() if cuda else None,
        "cpu_model": cpu_model(),
        **git_state(Path(__file__).resolve().parent),
        "numerics_env": numerics_env(os.environ),
        "torch_flags": _torch_flags(cuda),
    }


def numerics_env(environ: os._Environ[str] | dict[str, str]) -> dict[str, str | None]:
    """`NUMERICS_VARS` (None when unset) and every set ``TORCH_*``/``PYTORCH_*`` variable."""
    found: dict[str, str | None] = {name: environ.get(name) for name in NUMERICS_VARS}
    found.update({k: v for k, v in sorted(environ.items()) if k.startswith(_NUMERICS_PREFIXES)})
    return found


def cpu_model() -> str | None:
    """The CPU's marketing name ("AMD EPYC 7763 64-Core Processor"), or None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        return match.group(1).strip()
    return platform.processor() or None  # macOS and Windows name it here


def git_state(where: Path) -> dict[str, Any]:
    """The checkout holding ``where``: commit, whether the tree differs from it, and the
    SHA-256 of ``git diff HEAD`` (equal hashes: the same uncommitted change; untracked files
    count as dirty but are not hashed). All None outside a checkout or without git."""
    commit = _git(where, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None, "git_diff_sha256": None}
    status = _git(where, "status", "--porcelain", "--untracked-files=normal")
    diff = _git(where, "diff", "HEAD", strip=False) or ""
    dirty = bool(status)
    digest = hashlib.sha256(diff.encode("utf-8")).hexdigest() if dirty else None
    return {"git_commit": commit, "git_dirty": dirty, "git_diff_sha256": digest}


def imported_packages(modules: Iterable[str]) -> dict[str, str]:
    """Installed distribution → version, for every distribution that provides one of the
    top-level ``modules`` (the names in ``sys.modules`` of the processes that ran)."""
    providers = _providers()
    found: dict[str, str] = {}
    for module in modules:
        for dist in providers.get(module.partition(".")[0], ()):
            if dist not in found:
                try:
                    found[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    continue
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


@functools.cache
def _providers() -> Mapping[str, list[str]]:
    """Top-level module → the distributions providing it: a scan of every installed
    distribution's file list (most of a second), once per process."""
    return importlib.metadata.packages_distributions()


def top_level_modules() -> frozenset[str]:
    """The top-level names of the modules this process has imported."""
    return frozenset(name.partition(".")[0] for name in list(sys.modules))


def _torch_flags(cuda: bool) -> dict[str, Any]:
    """torch's process-wide switches that change numerics (TF32, determinism, cuDNN's
    algorithm search)."""
    flags: dict[str, Any] = {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if cuda:
        flags.update(
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_deterministic=torch.backends.cudnn.deterministic,
        )
    return flags


def _nccl_version() -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _nvidia_smi() -> list[tuple[str, str]] | None:
    """(name, driver) of each GPU nvidia-smi lists, or None without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.rsplit(",", 1) for line in out.stdout.splitlines() if "," in line]
    return [(name.strip(), driver.strip()) for name, driver in rows] or None


def _git(where: Path, *args: str, strip: bool = True) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=where)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout
