"""What every model offers the training runner: its task, DEQ statistics, warm-up mode and
checkpoint format.

A model plugin registers a factory (``register_models``) called with keyword arguments:

    factory(*, num_classes, in_channels=3, image_size=None, head=None, head_options=None,
            deq=None, **options) -> Model

``deq`` is a `DEQSettings` (explicit models ignore it); ``head`` names a registered head
(models with a head of their own refuse one). A head plugin registers a factory
``head(channels, num_classes, **options) -> nn.Module`` mapping a state tuple (one tensor per
resolution, ``channels[i]`` channels each) to logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from deqbench.deq import DEQ
from deqbench.errors import CheckpointError
from deqbench.settings import DEQSpec
from deqbench.state import State
from deqbench.stats import DEQStats

TASKS = ("classification", "segmentation")

#: Version of the checkpoint layout written by `save_model`; bump it when the layout changes.
CHECKPOINT_FORMAT = 1


class WeightFormat(Protocol):
    """Another layout of published weights that a model reads (a reference implementation's):
    ``detect`` tells it by its keys, ``convert`` maps it onto the model's own state dict and
    refuses the first key that does not fit with one `CheckpointError` line. Both take what
    `read_weights` returned, wrappers and all."""

    def detect(self, payload: Any) -> bool: ...

    def convert(self, payload: Any, model: nn.Module) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class DEQSettings(DEQSpec):
    """How a model's DEQ layer solves and differentiates (a suite's ``[deq]`` table): the
    settings of `deqbench.settings.DEQSpec`, and the layer they build.

    ``f_max_iter`` / ``b_max_iter`` None take the variant's published caps.
    """

    def build(self, cell: nn.Module, *, f_max_iter: int = 30, b_max_iter: int = 30) -> DEQ:
        """A `DEQ` layer around ``cell``; the caps given here apply where the settings say None."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kwargs["f_max_iter"] = self.f_max_iter or f_max_iter
        kwargs["b_max_iter"] = self.b_max_iter or b_max_iter
        for key in ("solver_options", "gradient_options", "b_solver_options"):
            kwargs[key] = dict(kwargs[key])
        return DEQ(cell, **kwargs)


class Model(nn.Module):
    """Base of the models the runner trains: ``forward(x)`` returns logits, ``(B, K)`` for
    classification and ``(B, K, H, W)`` at the input size for segmentation.

    Implicit models set ``deq`` to their `DEQ` layer and override `set_unrolled`; explicit
    models keep the defaults, which report no DEQ statistics and have no warm-up mode.
    """

    task: ClassVar[str] = "classification"
    #: The other weight layouts the model reads, by name (a suite's ``[model] weights_format``).
    weight_formats: ClassVar[Mapping[str, WeightFormat]] = {}

    # A property, not a class attribute `deq = None`: nn.Module keeps submodules in
    # `_modules`, so a class attribute would hide an assigned DEQ layer from `self.deq`.
    @property
    def deq(self) -> DEQ | None:
        """The model's DEQ layer (assign one as ``self.deq = DEQ(...)``); None if explicit."""
        return self._modules.get("deq")

    @deq.setter
    def deq(self, value: DEQ | None) -> None:  # reached only for None (nn.Module takes modules)
        self._modules["deq"] = value

    @property
    def implicit(self) -> bool:
        """Whether the model finds an equilibrium (and has solver statistics to report)."""
        return self.deq is not None

    @property
    def stats(self) -> DEQStats | None:
        """Statistics of the last forward (and its backward once run); None when explicit."""
        return self.deq.stats if self.deq is not None else None

    @property
    def unrolled(self) -> bool:
        """True while in the unrolled warm-up mode (a weight-tied explicit stack)."""
        return False

    def set_unrolled(self, unrolled: bool) -> None:
        """Switch between the unrolled warm-up mode and equilibrium mode (no-op if explicit).
        Evaluation always runs in equilibrium mode whatever this says."""

    def head_logits(self, state: State, x: Tensor) -> Tensor:
        """The logits ``forward(x)`` returns when its DEQ layer returns ``state``: what follows
        the layer (head, upsampling). The fixed-point correction loss needs it
        (`deqbench.runs.train.correction`); models without it refuse that loss."""
        raise NotImplementedError(
            f"{type(self).__name__} does not map a DEQ state to logits: override "
            "Model.head_logits(state, x) to train it with fixed-point correction (recipe.fpc_k)"
        )

    def jac_reg_loss(self) -> Tensor | float:
        """The weighted Jacobian penalty of the last forward, to add to the loss (0.0 if none)."""
        return self.deq.jac_reg_loss() if self.deq is not None else 0.0


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (weight-norm's gain and direction counted as they are stored)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, path: str | Path, **info: Any) -> None:
    """Write a plain, versioned state-dict checkpoint; ``info`` (names, options) goes with it."""
    payload = {"format": CHECKPOINT_FORMAT, "info": info, "state_dict": model.state_dict()}
    torch.save(payload, Path(path))


def read_weights(path: str | Path) -> Any:
    """A weights file as torch saved it, read with ``weights_only=True`` onto the CPU; a missing
    or unreadable file is one `CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or objects weights_only refuses
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable weights file ({reason})") from None


def load_model(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a `save_model` checkpoint into ``model`` (``weights_only``); returns its ``info``.

    A file that is not such a checkpoint, another format version, missing or unexpected keys
    and shape mismatches raise one `CheckpointError` naming the file and what differs.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # unpickling refused, truncated or not a torch file
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: not a loadable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a deqbench checkpoint (no state_dict)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format')!r}, this deqbench reads "
            f"{CHECKPOINT_FORMAT}"
        )
    state, own = payload["state_dict"], model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
    if problems:
        raise CheckpointError(f"{path}: does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state)
    return dict(payload.get("info", {}))
