"""The reference MDEQ checkpoint converter: its key layout against the reference's own for
every published config (tests/plugins/data/, taken from the shared reference's
mdeq_state_dict_keys.json), a round trip whose outputs are exactly deqbench's, every wrapper,
and a one-line refusal of the first misfit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deqbench.errors import CheckpointError
from deqbench.models import DEQSettings, load_model
from deqbench.runs.train.weights import load_weights
from deqbench_plugins.mdeq import convert
from deqbench_plugins.mdeq.configs import Variant
from deqbench_plugins.mdeq.variants import MDEQModel, build_cell, build_head, build_mdeq

#: The reference's layout of every published config ([key, shape, in the frozen copy]), taken
#: from the shared reference file below so that a clean checkout tests it too.
KEYS = Path(__file__).resolve().parent / "data" / "mdeq_reference_keys.json"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mdeq_state_dict_keys.json"

#: The reference's configs and deqbench's variant of each, with its class count. locuslab/mdeq's
#: ImageNet LARGE config builds its XL network (plugins/mdeq/configs.py).
CONFIGS = {
    "experiments/cifar/cls_mdeq_TINY.yaml": ("cifar-tiny", 10),
    "experiments/cifar/cls_mdeq_LARGE.yaml": ("cifar-large", 10),
    "experiments/imagenet/cls_mdeq_SMALL.yaml": ("imagenet-small", 1000),
    "experiments/imagenet/cls_mdeq_LARGE.yaml": ("imagenet-xl", 1000),
    "experiments/imagenet/cls_mdeq_XL.yaml": ("imagenet-xl", 1000),
    "experiments/cityscapes/seg_mdeq_SMALL.yaml": ("cityscapes-small", 19),
    "experiments/cityscapes/seg_mdeq_LARGE.yaml": ("cityscapes-large", 19),
    "experiments/cityscapes/seg_mdeq_XL.yaml": ("cityscapes-xl", 19),
}


@pytest.mark.skipif(not SHARED.is_file(), reason="the shared reference is not beside the checkout")
def test_the_fixture_is_the_shared_reference():
    shared, fixture = json.loads(SHARED.read_text()), json.loads(KEYS.read_text())
    assert fixture["provenance"]["commit"] == shared["provenance"]["commit"]
    assert set(fixture["models"]) == set(shared["models"])
    for config, model in shared["models"].items():
        kept = fixture["models"][config]
        assert kept["keys"] == [[k[0], k[1], k[-1]] for k in model["keys"]]
        assert (kept["num_keys"], kept["num_frozen_copy_keys"]) == (
            model["num_keys"],
            model["num_frozen_copy_keys"],
        )


@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_layout_is_the_reference_state_dict_of_every_published_config(config):
    """Keys and shapes, the frozen copy and the aliases included (built on the meta device:
    shapes without memory, so the 90M-parameter XL costs nothing)."""
    recorded = json.loads(KEYS.read_text())["models"][config]
    name, classes = CONFIGS[config]
    with torch.device("meta"):
        model = build_mdeq(name, num_classes=classes)
    expected = {key: tuple(shape) for key, shape, *_ in recorded["keys"]}
    assert convert.full_layout(model) == expected
    assert len(expected) == recorded["num_keys"]
    frozen = [key for key, *_, is_copy in recorded["keys"] if is_copy]
    assert len(frozen) == recorded["num_frozen_copy_keys"]
    assert all(key.startswith(("fullstage_copy.", "deq.func_copy.")) for key in frozen)


def tiny(task: str = "classification", seed: int = 0) -> MDEQModel:
    """A 3-branch MDEQ (fusion down two steps), every tensor random, BN statistics included."""
    torch.manual_seed(seed)
    cfg = Variant((8, 8, 16), 2, task, (4, 4, 8), 16, unroll=2, f_cap=6, b_cap=6, stem_stride=2)
    cell = build_cell(cfg, 3, 16, None, task=task)
    model = MDEQModel(cell, build_head(None, cfg, cell.channels, 5, None), DEQSettings(), cfg, 2)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(int(torch.randint(1, 100, ())))
            elif key.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            else:
                tensor.copy_(torch.randn_like(tensor) * 0.2)
    return model.eval()


def outputs(model: MDEQModel) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)))


def wrapped(state: dict, wrapper: str) -> object:
    """``state`` as the reference's trainers save it."""
    if wrapper == "checkpoint.pth.tar":
        return {"epoch": 3, "model": "mdeq", "state_dict": state, "perf": torch.tensor(75.4)}
    if wrapper == "FullModel":
        return {
            **{f"model.{k}": v for k, v in state.items()},
            "loss.criterion.weight": torch.ones(5),
        }
    if wrapper == "DataParallel":
        return {f"module.{k}": v for k, v in state.items()}
    return state


@pytest.mark.parametrize(
    ("task", "wrapper", "copy", "aliases"),
    [
        ("classification", "bare", True, tuple(convert.ALIASES)),
        ("classification", "checkpoint.pth.tar", True, tuple(convert.ALIASES)),
        ("classification", "DataParallel", False, ()),
        ("segmentation", "FullModel", True, tuple(convert.ALIASES)),
        ("segmentation", "bare", True, ("deq.func.",)),
    ],
)
def test_a_reference_checkpoint_round_trips_to_exactly_equal_outputs(
    tmp_path, task, wrapper, copy, aliases
):
    original = tiny(task)
    path = tmp_path / "ref.pkl"
    torch.save(wrapped(convert.to_reference(original, copy=copy, aliases=aliases), wrapper), path)
    fresh = tiny(task, seed=1)
    assert not torch.equal(outputs(fresh), outputs(original))  # the test can fail
    assert load_weights(fresh, path) == "mdeq-reference"  # told by its keys
    mine, theirs = fresh.state_dict(), original.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert torch.equal(outputs(fresh), outputs(original))


def refusal(tmp_path: Path, edit) -> str:
    state = convert.to_reference(tiny())
    edit(state)
    path = tmp_path / "bad.pkl"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(tiny(seed=1), path, "mdeq-reference")
    message = str(info.value)
    assert message.startswith(f"{path}: mdeq-reference: ") and "\n" not in message
    return message


def test_refuses_an_unexpected_key_naming_it(tmp_path):
    def rename(state):
        state["classifier.weights"] = state.pop("classifier.weight")

    message = refusal(tmp_path, rename)
    assert message.endswith(
        "unexpected key 'classifier.weights' for this model; did you mean 'classifier.weight'?"
    )


def test_refuses_a_wrong_shape_with_the_expected_one(tmp_path):
    def narrow(state):
        state["fullstage.branches.2.blocks.0.conv1.weight_v"] = torch.zeros(32, 8, 3, 3)

    message = refusal(tmp_path, narrow)
    assert message.endswith(
        "'fullstage.branches.2.blocks.0.conv1.weight_v' has shape (32, 8, 3, 3), expected "
        "(32, 16, 3, 3) (deqbench's deq.cell.blocks.2.conv1.weight_v)"
    )


def test_refuses_a_missing_key_naming_it(tmp_path):
    message = refusal(tmp_path, lambda state: state.pop("final_layer.1.running_var"))
    assert message.endswith(
        "missing key 'final_layer.1.running_var' (deqbench's head.final.1.running_var)"
    )


def test_refuses_an_incomplete_frozen_copy_and_an_alias_unlike_its_tensor(tmp_path):
    gone = refusal(
        tmp_path, lambda state: state.pop("fullstage_copy.fuse_layers.2.0.net.1.conv.weight")
    )
    assert gone.endswith("missing key 'fullstage_copy.fuse_layers.2.0.net.1.conv.weight'")

    def tamper(state):
        key = "deq.func.branches.0.blocks.0.gn1.bias"
        state[key] = state[key] + 1

    assert refusal(tmp_path, tamper).endswith(
        "'deq.func.branches.0.blocks.0.gn1.bias' differs from "
        "'fullstage.branches.0.blocks.0.gn1.bias', whose alias it is"
    )


def test_a_model_without_the_reference_layout_is_refused():
    with pytest.raises(CheckpointError, match=r"no place for deqbench's 'weight'"):
        convert.layout(torch.nn.Linear(2, 2))


def test_the_command_line_converter_writes_a_deqbench_checkpoint(tmp_path, cli):
    """``python -m deqbench_plugins.mdeq.convert``: the class count read off the classifier."""
    torch.manual_seed(0)
    original = build_mdeq("cpu-small", num_classes=7).eval()
    torch.save({"state_dict": convert.to_reference(original)}, tmp_path / "ref.pth.tar")
    out = tmp_path / "small.pt"
    result = cli.invoke(
        convert.main, [str(tmp_path / "ref.pth.tar"), str(out), "--model", "mdeq-cpu-small"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("small.pt: mdeq-cpu-small, 7 classes")
    torch.manual_seed(1)
    fresh = build_mdeq("cpu-small", num_classes=7).eval()
    assert load_model(fresh, out)["converted_from"] == str(tmp_path / "ref.pth.tar")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), original(x))
    bad = cli.invoke(
        convert.main, [str(tmp_path / "none.pkl"), str(out), "--model", "mdeq-cpu-small"]
    )
    assert (
        bad.exit_code == 2
        and bad.output.strip() == f"error: {tmp_path / 'none.pkl'}: no such weights file"
    )
