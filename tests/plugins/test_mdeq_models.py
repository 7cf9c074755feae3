"""The registered MDEQ variants: parameter counts, forward shapes with both heads, warm-up mode,
statistics, checkpoints, bf16 autocast and the listing."""

from __future__ import annotations

import pytest
import torch

from deqbench.cli import main
from deqbench.models import CheckpointError, DEQSettings, load_model, parameter_count, save_model
from deqbench.plugins import get_registry
from deqbench_plugins.mdeq import MODELS
from deqbench_plugins.mdeq.variants import VARIANTS

NAMES = [name for name, _, _ in MODELS]
QUICK = DEQSettings(f_max_iter=2, b_max_iter=2)


def _build(name: str, **kw):
    return get_registry().get("models", name).obj(**kw)


#: Trainable parameters of locuslab/mdeq@20e8a40's own builds of its published configs (with
#: their class counts), as the issue that asked for exact counts measured them.
REFERENCE_PARAMS = {
    "mdeq-cifar-tiny": 158_986,
    "mdeq-cifar-large": 11_098_398,
    "mdeq-imagenet-small": 16_808_936,
    "mdeq-imagenet-xl": 90_463_280,
    "mdeq-cityscapes-small": 8_968_467,
    "mdeq-cityscapes-large": 55_955_859,
    "mdeq-cityscapes-xl": 79_551_755,
}


def _classes(key: str) -> int:
    return 19 if "cityscapes" in key else 1000 if "imagenet" in key else 10


@pytest.mark.parametrize(("name", "key"), [(n, k) for n, k, _ in MODELS if n in REFERENCE_PARAMS])
def test_parameter_count_equals_the_reference_build_exactly(name, key):
    with torch.device("meta"):  # counts without allocating or initializing 90M weights
        model = _build(name, num_classes=_classes(key))
    assert parameter_count(model) == REFERENCE_PARAMS[name]
    assert VARIANTS[key].params == REFERENCE_PARAMS[name]  # what `list models -v` says


def test_imagenet_large_is_the_later_config_within_its_published_rounding():
    with torch.device("meta"):
        model = _build("mdeq-imagenet-large", num_classes=1000)
    assert round(parameter_count(model) / 1e6, 1) == 67.1  # locuslab/deq's 67.1M, no build
    assert VARIANTS["imagenet-large"].source.startswith("locuslab/deq")
    assert VARIANTS["imagenet-large"].params == 0  # no reference build to claim


def test_every_variant_names_the_config_its_numbers_come_from():
    for key, cfg in VARIANTS.items():
        assert cfg.source, key
        if key != "cpu-small":
            assert cfg.source.startswith(("locuslab/mdeq@20e8a40 ", "locuslab/deq@")), key
            assert ".yaml" in cfg.source, key
    tiny = VARIANTS["cifar-tiny"]  # locuslab/mdeq's caps, not locuslab/deq's 18/20
    assert (tiny.f_cap, tiny.b_cap) == (22, 24) and "locuslab/mdeq" in tiny.source


def test_the_cpu_variant_is_small():
    assert parameter_count(_build("mdeq-cpu-small", num_classes=10, in_channels=1)) < 150_000


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("head", ["classification", "segmentation"])
def test_forward_shapes_with_both_heads(name, head):
    torch.manual_seed(0)
    model = _build(name, num_classes=5, head=head, deq=QUICK).eval()
    assert model.task == head
    x = torch.randn(1, 3, 16, 20)
    with torch.no_grad():
        out = model(x)
    assert out.shape == ((1, 5) if head == "classification" else (1, 5, 16, 20))
    assert torch.isfinite(out).all()
    assert model.stats.forward.nfe == 2


def test_deq_is_built_with_the_variant_caps_unless_settings_say():
    model = _build("mdeq-cifar-tiny", num_classes=10)
    assert (model.deq.f_max_iter, model.deq.b_max_iter) == (22, 24)
    model = _build(
        "mdeq-cifar-tiny", num_classes=10, deq=DEQSettings(f_max_iter=5, solver="broyden")
    )
    assert model.deq.f_max_iter == 5 and type(model.deq.solver).__name__.lower().startswith(
        "broyden"
    )


def _contractive(model):
    with torch.no_grad():  # see test_mdeq_cell: small output gains, O(1) biases
        for post in model.cell.post:
            post[-1].weight.mul_(1e-3)
            post[-1].bias.normal_(0, 1)
    return model


def test_unrolled_warmup_agrees_with_equilibrium_when_contractive_and_eval_solves():
    torch.manual_seed(0)
    deq = DEQSettings(f_max_iter=60, f_tol=1e-6)
    model = _contractive(
        _build("mdeq-cpu-small", num_classes=10, in_channels=1, deq=deq, unroll=40)
    )
    x = torch.randn(4, 1, 32, 32)
    model.train()
    model.set_unrolled(True)
    assert model.unrolled
    warm = model(x)
    assert model.stats.forward is None  # no solve ran
    model.set_unrolled(False)
    equilibrium = model(x)
    assert model.stats.forward.status == "converged"
    torch.testing.assert_close(warm, equilibrium, rtol=1e-4, atol=1e-4)
    model.set_unrolled(True)
    model.eval()
    with torch.no_grad():
        model(x)
    assert model.stats.forward is not None  # evaluation always solves


def test_training_step_records_forward_and_backward_statistics():
    torch.manual_seed(0)
    model = _build("mdeq-cpu-small", num_classes=10, in_channels=1).train()
    model(torch.randn(3, 1, 32, 32)).logsumexp(1).sum().backward()
    row = model.stats.as_dict()
    assert row["f_nfe"] >= 1 and row["b_nfe"] >= 1 and "f_rel_residual" in row
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_checkpoint_round_trips_and_refuses_tampered_or_mismatched(tmp_path):
    torch.manual_seed(0)
    model = _build("mdeq-cpu-small", num_classes=10, in_channels=1).eval()
    path = tmp_path / "m.pt"
    save_model(model, path, name="mdeq-cpu-small")
    other = _build("mdeq-cpu-small", num_classes=10, in_channels=1).eval()
    assert load_model(other, path) == {"name": "mdeq-cpu-small"}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x))
    # a frozen copy of f's keys, the reference code's failure, is refused by name
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["frozen.cell.stem.layers.0.weight"] = torch.zeros(1)
    torch.save(payload, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"extra\.pt.*unexpected keys.*frozen"):
        load_model(other, tmp_path / "extra.pt")
    payload = torch.load(path, weights_only=True)
    payload["format"] = 999
    torch.save(payload, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match=r"v\.pt: checkpoint format 999"):
        load_model(other, tmp_path / "v.pt")
    wider = _build("mdeq-cpu-small", num_classes=7, in_channels=1)
    with pytest.raises(CheckpointError, match=r"m\.pt.*shape mismatch"):
        load_model(wider, path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a loadable checkpoint"):
        load_model(other, tmp_path / "junk.pt")


def test_bf16_autocast_forward_and_backward_on_cpu():
    torch.manual_seed(0)
    model = _build("mdeq-cpu-small", num_classes=10, in_channels=1).train()
    x = torch.randn(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(1).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stats.forward.nfe >= 1
    # the state runs in bf16, but the solvers' norms (and so their stopping) stay float32
    for solve in (model.stats.forward, model.stats.backward):
        assert solve.result.rel_trace.dtype == torch.float32
        assert torch.isfinite(solve.result.rel_trace).all()


def test_unknown_head_and_variant_say_did_you_mean():
    from deqbench.errors import DeqbenchError
    from deqbench_plugins.mdeq.variants import variant

    with pytest.raises(DeqbenchError, match="did you mean"):
        variant("cifar-tyni")
    with pytest.raises(DeqbenchError, match="segmentation"):
        _build("mdeq-cifar-tiny", num_classes=10, head="segmentaton")


def test_deqbench_list_models_shows_every_name(cli):
    result = cli.invoke(main, ["list", "models"])
    assert result.exit_code == 0, result.output
    for name in [*NAMES, "explicit-mdeq", "resnet18", "resnet50", "resnet101"]:
        assert name in result.output
    result = cli.invoke(main, ["list", "heads"])
    assert "classification" in result.output and "segmentation" in result.output


def test_list_models_verbose_shows_each_variants_source(cli):
    import json

    result = cli.invoke(main, ["list", "models", "-v", "--json"])
    assert result.exit_code == 0, result.output
    details = {item["name"]: item["details"] for item in json.loads(result.output)}
    assert "caps 22/24" in details["mdeq-cifar-tiny"]
    assert "experiments/cifar/cls_mdeq_TINY.yaml" in details["mdeq-cifar-tiny"]
    assert "158,986 params" in details["mdeq-cifar-tiny"]
    assert "locuslab/deq" in details["mdeq-imagenet-large"]
    result = cli.invoke(main, ["list", "models", "-v"])
    assert result.exit_code == 0 and "locuslab/mdeq@20e8a40" in result.output
