"""Training checkpoints: where they live, RNG state capture, atomic writes and safe loads.

A run's checkpoint sits next to its report (``reports/x.checkpoints/run-0003.pt``) and holds
plain state dicts, tensors and primitives only, so that it loads with ``weights_only=True``.
It is written to a temp file in the same folder, synced, then renamed over the old one: a crash
mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from deqbench.errors import CheckpointError

#: Version of the checkpoint layout; a file of another version is refused.
CHECKPOINT_FORMAT = 1

_TEMP_SUFFIX = ".tmp"
_NO_GENERATORS: Mapping[str, torch.Generator] = MappingProxyType({})


def checkpoint_dir(report: str | Path) -> Path:
    """``reports/x.csv`` → ``reports/x.checkpoints``."""
    report = Path(report)
    return report.with_name(report.stem + ".checkpoints")


def checkpoint_path(report: str | Path, run_index: int) -> Path:
    """The checkpoint of run ``run_index`` of ``report``: ``<report>.checkpoints/run-0003.pt``."""
    return checkpoint_dir(report) / f"run-{run_index:04d}.pt"


def rng_state(generators: Mapping[str, torch.Generator] = _NO_GENERATORS) -> dict[str, Any]:
    """Every random state a run draws from: torch's CPU generator, each CUDA device's (only when
    CUDA is initialised: querying it would initialise it), numpy's and Python's global ones and
    each of ``generators`` (e.g. ``{"train_loader": loader.generator}``). All values are types
    ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        # numpy's key is a uint32 ndarray, which weights_only refuses: stored as int64 tensor
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    return state


def set_rng_state(
    state: Mapping[str, Any],
    generators: Mapping[str, torch.Generator] = _NO_GENERATORS,
) -> None:
    """Restore what `rng_state` captured, so that every generator continues exactly as it would
    have. A generator in ``generators`` that the state does not hold is a `CheckpointError`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    saved = state.get("generators", {})
    for name, generator in generators.items():
        if name not in saved:
            raise CheckpointError(
                f"the checkpoint's RNG state has no generator {name!r} "
                f"(it holds: {', '.join(sorted(saved)) or 'none'})"
            )
        generator.set_state(saved[name])


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (state dicts, tensors, primitives) to ``path`` atomically, with
    ``format`` and ``deqbench`` (the version) added. Creates the folder."""
    from deqbench import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**payload, "format": CHECKPOINT_FORMAT, "deqbench": __version__}
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:  # Ctrl-C mid-write too: never leave the temp file behind
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # makes the rename itself durable


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a folder (Windows): the rename stands
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a `save_checkpoint` file with ``weights_only=True``. A missing file, one that is not
    a torch file, or one of another format is a one-line `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint" if path.is_dir() else "no such checkpoint"
        raise CheckpointError(f"{path}: {what}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, junk, or holds objects weights_only refuses
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path}: not a deqbench run checkpoint (no format key)")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format']!r} (deqbench "
            f"{payload.get('deqbench', '?')}); this deqbench reads format {CHECKPOINT_FORMAT}"
        )
    return payload


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint and any temp file a killed write left beside it; a missing one is
    fine. The folder goes too once it is empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    folder = path.parent
    if not folder.is_dir():
        return
    for stale in folder.glob(f".{path.name}.*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: other runs' checkpoints stay
        folder.rmdir()
