"""Starting a run from given weights (``[model] weights``): a deqbench checkpoint, a plain state
dict, or another layout the model declares (`deqbench.models.Model.weight_formats`, e.g. the
reference MDEQ's), told apart by their keys when ``weights_format = "auto"``.

A run whose recipe sets no training length evaluates those weights and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from deqbench.errors import CheckpointError, ConfigError, did_you_mean
from deqbench.models import Model, read_weights

AUTO, DEQBENCH = "auto", "deqbench"


def deqbench_state(payload: Any) -> dict[str, Any]:
    """The model's state dict in a deqbench file: a run checkpoint (``state.model``,
    `deqbench.runs.train.snapshot`), a `deqbench.models.save_model` file (``state_dict``) or a
    plain state dict, without the ``module.`` prefix that DataParallel/DDP adds."""
    if isinstance(payload, Mapping) and "format" in payload:
        state = payload.get("state")
        payload = state.get("model") if isinstance(state, Mapping) else payload.get("state_dict")
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"not a state dict or deqbench checkpoint ({type(payload).__name__})")
    state = {str(k): v for k, v in payload.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def misfit(state: Mapping[str, Any], own: Mapping[str, Tensor]) -> str | None:
    """The first key of ``state`` that does not fit ``own`` (unexpected, not a tensor, or of
    another shape), else the first key of ``own`` it misses; None when it fits."""
    for key, value in state.items():
        if key not in own:
            return f"unexpected key {key!r}"
        if not isinstance(value, Tensor):
            return f"{key!r} is a {type(value).__name__}, not a tensor"
        if value.shape != own[key].shape:
            return f"{key!r} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
    missing = next((key for key in own if key not in state), None)
    return f"missing key {missing!r}" if missing is not None else None


def load_weights(model: Model, path: str | Path, fmt: str = AUTO) -> str:
    """Load the weights in ``path`` into ``model`` in the layout ``fmt`` (``"auto"``: deqbench's
    when the keys fit, else the declared format that recognises them); returns the format read.
    A file that does not fit is one `CheckpointError` line naming the file and the first key."""
    formats = getattr(model, "weight_formats", {})
    if fmt not in (AUTO, DEQBENCH, *formats):
        known = (AUTO, DEQBENCH, *formats)
        hint = did_you_mean(fmt, known)
        raise ConfigError(f"model.weights_format: {type(model).__name__} reads no {fmt!r}{hint}")
    path = Path(path)
    payload = read_weights(path)
    if fmt == AUTO:
        fmt = next((name for name, f in formats.items() if f.detect(payload)), DEQBENCH)
    try:
        if fmt == DEQBENCH:
            state = deqbench_state(payload)
            problem = misfit(state, model.state_dict())
            if problem is not None:
                tried = f" (nor a layout of {', '.join(formats)})" if formats else ""
                raise CheckpointError(f"{problem} for {type(model).__name__}{tried}")
        else:
            state = formats[fmt].convert(payload, model)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    with torch.no_grad():
        model.load_state_dict(state)
    return fmt
