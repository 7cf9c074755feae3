"""The reference implementation's MDEQ checkpoints (locuslab/mdeq) read into deqbench's MDEQ.

The reference names its modules differently (``downsample``/``stage0`` for the stem,
``fullstage`` for the cell, ``incre_modules``/``downsamp_modules``/``final_layer``/
``classifier`` or ``last_layer`` for the heads), and its ``state_dict()`` holds more than the
network:

- ``fullstage_copy.*``: a frozen copy of the cell, taken before weight norm (plain ``.weight``
  where the cell has ``weight_g``/``weight_v``), whose values every forward overwrites from the
  cell. Its keys and shapes are checked, its values dropped.
- ``deq.func.*`` and ``deq.func_copy.*``: aliases of ``fullstage.*`` and ``fullstage_copy.*``
  (the same tensors). An alias whose values differ from its tensor's is refused.
- Wrappers: ``checkpoint.pth.tar`` holds the state dict under ``"state_dict"``; the
  segmentation trainer saves its ``FullModel`` (every key under ``model.``, plus the loss's
  ``loss.criterion.weight``, dropped); ``nn.DataParallel`` adds ``module.``.

The copy and each alias group are optional, each as a whole. The mapping is derived from the
deqbench model's own keys, so it fits every variant (``plugins/mdeq/configs.py``). The first
key that does not fit is refused as one `CheckpointError` line naming it.

    python -m deqbench_plugins.mdeq.convert SMALL.pkl small.pt --model mdeq-imagenet-small

writes a deqbench checkpoint (`deqbench.models.save_model`); ``deqbench eval`` and
``[model] weights`` also read the reference's file as it is.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import torch
from torch import Tensor, nn

from deqbench.errors import CheckpointError, DeqbenchError

FORMAT = "mdeq-reference"
CELL, COPY = "fullstage.", "fullstage_copy."
ALIASES = {"deq.func.": CELL, "deq.func_copy.": COPY}  #: alias prefix → the prefix it aliases
_BOTTLENECK = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


def _fuse(m: re.Match) -> str:
    """deqbench's fusion ``fuse.i.j.k``: j > i is Sequential(conv1x1, GN); j < i is
    [conv, GN, ReLU] × (i − j) without the last ReLU, so step s sits at k = 3s and 3s + 1."""
    i, j, (step, part), rest = int(m[1]), int(m[2]), divmod(int(m[3]), 3), m[4]
    name = ("conv", "gnorm", "relu")[part]
    return f"{CELL}fuse_layers.{i}.{j}.net.{name if j > i else f'{step}.{name}'}.{rest}"


_RENAMES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"deq\.cell\.stem\.layers\.([0134])\.(.+)", lambda m: f"downsample.{m[1]}.{m[2]}"),
    (r"deq\.cell\.stem\.layers\.([67])\.(.+)", lambda m: f"stage0.{int(m[1]) - 6}.{m[2]}"),
    (r"deq\.cell\.blocks\.(\d+)\.(.+)", lambda m: f"{CELL}branches.{m[1]}.blocks.0.{m[2]}"),
    (r"deq\.cell\.fuse\.(\d+)\.(\d+)\.(\d+)\.(.+)", _fuse),
    (r"deq\.cell\.post\.(\d+)\.1\.(.+)", lambda m: f"{CELL}post_fuse_layers.{m[1]}.conv.{m[2]}"),
    (r"deq\.cell\.post\.(\d+)\.2\.(.+)", lambda m: f"{CELL}post_fuse_layers.{m[1]}.gnorm.{m[2]}"),
    (
        r"head\.incre\.(\d+)\.body\.([013467])\.(.+)",
        lambda m: f"incre_modules.{m[1]}.0.{_BOTTLENECK[m[2]]}.{m[3]}",
    ),
    (
        r"head\.incre\.(\d+)\.skip\.([01])\.(.+)",
        lambda m: f"incre_modules.{m[1]}.0.downsample.{m[2]}.{m[3]}",
    ),
    (r"head\.down\.(\d+)\.([01])\.(.+)", lambda m: f"downsamp_modules.{m[1]}.{m[2]}.{m[3]}"),
    (r"head\.final\.([01])\.(.+)", lambda m: f"final_layer.{m[1]}.{m[2]}"),
    (r"head\.classifier\.(.+)", lambda m: f"classifier.{m[1]}"),
    (r"head\.layers\.([013])\.(.+)", lambda m: f"last_layer.{m[1]}.{m[2]}"),
)
#: deqbench key pattern → its reference key.
RULES = tuple((re.compile(pattern), rename) for pattern, rename in _RENAMES)


def reference_key(key: str) -> str:
    """The reference's name of deqbench's MDEQ key ``key``; a `CheckpointError` for a key the
    reference layout has no place for (a model that is not an MDEQ with its own heads)."""
    for pattern, rename in RULES:
        if m := pattern.fullmatch(key):
            return rename(m)
    raise CheckpointError(f"{FORMAT}: the reference layout has no place for deqbench's {key!r}")


def layout(model: nn.Module) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The network's reference keys for ``model``: reference key → (deqbench key, shape)."""
    return {reference_key(k): (k, tuple(v.shape)) for k, v in model.state_dict().items()}


def copy_key(key: str) -> str | None:
    """The frozen copy's key for the cell's ``key``: the copy was taken before weight norm, so
    ``weight_v`` becomes ``weight`` and ``weight_g`` has none (None)."""
    if key.endswith(".weight_g"):
        return None
    return COPY + key.removeprefix(CELL).removesuffix("_v")


def _with_aliases(keys: Mapping[str, Any], groups: tuple[str, ...]) -> dict[str, Any]:
    """``keys`` and, for each alias prefix in ``groups``, the aliases of the keys it aliases."""
    out = dict(keys)
    for alias in groups:
        target = ALIASES[alias]
        out |= {alias + k.removeprefix(target): v for k, v in keys.items() if k.startswith(target)}
    return out


def full_layout(
    model: nn.Module, *, copy: bool = True, aliases: tuple[str, ...] = tuple(ALIASES)
) -> dict[str, tuple[int, ...]]:
    """Every key of the reference's ``state_dict()`` for ``model``, with its shape: the network,
    the frozen copy (``copy``) and the alias groups in ``aliases``."""
    core = {ref: shape for ref, (_, shape) in layout(model).items()}
    frozen = {copy_key(k): s for k, s in core.items() if k.startswith(CELL) and copy_key(k)}
    return _with_aliases(core | (frozen if copy else {}), aliases)


def to_reference(
    model: nn.Module, *, copy: bool = True, aliases: tuple[str, ...] = tuple(ALIASES)
) -> dict[str, Tensor]:
    """``model``'s weights in the reference's layout, as its ``state_dict()`` holds them; the
    frozen copy holds each weight-normed conv's normalized weight ``g · v / ‖v‖``."""
    own = model.state_dict()
    out = {ref: own[key] for ref, (key, _) in layout(model).items()}
    if copy:
        for key, value in list(out.items()):
            if not key.startswith(CELL) or (name := copy_key(key)) is None:
                continue
            if key.endswith(".weight_v"):
                gain = out[key.removesuffix("_v") + "_g"]
                value = gain * value / value.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            out[name] = value.clone()
    return _with_aliases(out, aliases)


def unwrap(payload: Any) -> dict[str, Any]:
    """The bare state dict in a reference checkpoint: under ``"state_dict"``
    (``checkpoint.pth.tar``), without ``module.`` (DataParallel), without ``model.`` and the
    ``loss.*`` keys (the segmentation trainer's FullModel)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not payload:
        raise CheckpointError(f"{FORMAT}: not a state dict ({type(payload).__name__})")
    state = {str(k): v for k, v in payload.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if all(k.startswith(("model.", "loss.")) for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state


def detect(payload: Any) -> bool:
    """Whether ``payload`` is in the reference's layout (its cell is ``fullstage``)."""
    try:
        return any(k.startswith(CELL) for k in unwrap(payload))
    except CheckpointError:
        return False


def _fits(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], core: Mapping) -> None:
    """Refuse the first key of ``state`` that is unexpected or of the wrong shape, then the
    first expected key it misses."""

    def where(key: str) -> str:
        return f" (deqbench's {core[key][0]})" if key in core else ""

    for key, value in state.items():
        if key not in expected:
            close = difflib.get_close_matches(key, list(expected), n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CheckpointError(f"{FORMAT}: unexpected key {key!r} for this model{hint}")
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{FORMAT}: {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != expected[key]:
            raise CheckpointError(
                f"{FORMAT}: {key!r} has shape {tuple(value.shape)}, expected "
                f"{expected[key]}{where(key)}"
            )
    for key in expected:
        if key not in state:
            raise CheckpointError(f"{FORMAT}: missing key {key!r}{where(key)}")


def convert(payload: Any, model: nn.Module) -> dict[str, Tensor]:
    """A reference checkpoint (in any of its wrappers) as ``model``'s state dict. The first key
    that does not fit (unexpected, of the wrong shape, missing, or an alias unlike its tensor)
    is one `CheckpointError` line."""
    state = unwrap(payload)
    core = layout(model)
    present = {p for p in (COPY, *ALIASES) if any(k.startswith(p) for k in state)}
    copy = bool(present & {COPY, "deq.func_copy."})  # a copy's alias needs the copy
    _fits(state, full_layout(model, copy=copy, aliases=tuple(present & set(ALIASES))), core)
    for key in state:
        for alias, target in ALIASES.items():
            aliased = target + key.removeprefix(alias)
            if key.startswith(alias) and not torch.equal(state[key], state[aliased]):
                raise CheckpointError(
                    f"{FORMAT}: {key!r} differs from {aliased!r}, whose alias it is"
                )
    return {name: state[ref] for ref, (name, _) in core.items()}


class ReferenceFormat:
    """The ``mdeq-reference`` weight format, as `deqbench.models.WeightFormat`."""

    name = FORMAT

    def detect(self, payload: Any) -> bool:
        return detect(payload)

    def convert(self, payload: Any, model: nn.Module) -> dict[str, Tensor]:
        return convert(payload, model)


REFERENCE = ReferenceFormat()


def num_classes(payload: Any) -> int:
    """The class count a reference checkpoint was trained for (its last layer's rows)."""
    state = unwrap(payload)
    for key in ("classifier.weight", "last_layer.3.weight"):
        if isinstance(state.get(key), Tensor):
            return int(state[key].shape[0])
    raise CheckpointError(f"{FORMAT}: no classifier.weight or last_layer.3.weight to count classes")


@click.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model", "model_name", required=True, help="Registered MDEQ, e.g. mdeq-imagenet-small."
)
@click.option("--num-classes", "classes", type=int, help="Default: the checkpoint's last layer's.")
def main(source: Path, target: Path, model_name: str, classes: int | None) -> None:
    """Convert a reference MDEQ checkpoint SOURCE into a deqbench checkpoint TARGET."""
    from deqbench.models import read_weights, save_model
    from deqbench.plugins import get_registry

    try:
        payload = read_weights(source)
        classes = classes or num_classes(payload)
        model = get_registry().get("models", model_name).obj(num_classes=classes)
        try:
            model.load_state_dict(convert(payload, model))
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        save_model(model, target, name=model_name, num_classes=classes, converted_from=str(source))
    except DeqbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{source} ({FORMAT}) → {target}: {model_name}, {classes} classes")


if __name__ == "__main__":
    main()
