"""Devices: the ``--device`` name resolved, and the device's name for a report's metadata."""

from __future__ import annotations

import platform
import re

import torch

from deqbench.errors import ConfigError, did_you_mean
from deqbench.execution import worker

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one; anything but cpu, cuda, cuda:N and auto, or CUDA
    without one, is a clear `ConfigError`."""

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        hint = did_you_mean(name, ("auto", "cpu", "cuda"))
        hint = hint if "did you mean" in hint else ""
        raise ConfigError(f"device {name!r}: expected one of {', '.join(DEVICES)}{hint}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or the CPU's."""
    if device.type != "cuda":
        return platform.processor() or platform.machine()
    if torch.cuda.is_initialized():
        return torch.cuda.get_device_name(device)
    # Asking here would create a CUDA context (hundreds of MB of GPU memory) in a suite process
    # whose runs train in workers: ask a short-lived worker instead.
    answer = worker.run_isolated(cuda_device_name, (str(device),), timeout_s=120)
    return answer.value if answer.status == "ok" else ""


def cuda_device_name(emit: object, device: str) -> str:
    """The name of CUDA ``device`` (a `deqbench.execution.worker.run_isolated` target)."""
    return torch.cuda.get_device_name(torch.device(device))
