"""Run checkpoints: paths, weights_only round trips, RNG state, atomic writes, clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from deqbench import __version__
from deqbench.execution import checkpoint
from deqbench.execution.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_dir,
    checkpoint_path,
    load_checkpoint,
    remove_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from deqbench.models import CheckpointError


def test_paths_sit_next_to_the_report(tmp_path):
    report = tmp_path / "reports" / "cifar.csv"
    assert checkpoint_dir(report) == tmp_path / "reports" / "cifar.checkpoints"
    assert checkpoint_path(str(report), 3) == tmp_path / "reports/cifar.checkpoints/run-0003.pt"
    assert checkpoint_path(report, 12345).name == "run-12345.pt"


def _trained(optimizer_cls, **options):
    """A model, its optimizer, a step scheduler and a CPU grad scaler after three steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    optimizer = optimizer_cls(model.parameters(), lr=0.1, **options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler, scaler


def _assert_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_equal(x, y)
    else:
        assert a == b


@pytest.mark.parametrize(
    ("optimizer_cls", "options"),
    [(torch.optim.Adam, {"weight_decay": 1e-4}), (torch.optim.SGD, {"momentum": 0.9})],
)
def test_training_state_round_trips_with_weights_only(tmp_path, optimizer_cls, options):
    model, optimizer, scheduler, scaler = _trained(optimizer_cls, **options)
    assert optimizer.state_dict()["state"], "the optimizer has per-parameter state to save"
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "step": 3,
        "warmup": {"unrolled": False, "mode": "equilibrium"},
        "rng": rng_state(),
    }
    path = checkpoint_path(tmp_path / "r.csv", 0)
    save_checkpoint(path, payload)
    torch.load(path, weights_only=True)  # loads without any allowlist
    loaded = load_checkpoint(path)
    assert loaded["format"] == CHECKPOINT_FORMAT and loaded["deqbench"] == __version__
    _assert_equal({k: loaded[k] for k in payload}, payload)

    # Restoring into fresh objects continues exactly as the originals do.
    fresh = _trained(optimizer_cls, **options)  # same seed: same shapes; state overwritten
    fresh_model, fresh_opt, fresh_sched, fresh_scaler = fresh
    fresh_model.load_state_dict(loaded["model"])
    fresh_opt.load_state_dict(loaded["optimizer"])
    fresh_sched.load_state_dict(loaded["scheduler"])
    fresh_scaler.load_state_dict(loaded["scaler"])
    x = torch.randn(5, 3)
    for m, o, s in ((model, optimizer, scheduler), (fresh_model, fresh_opt, fresh_sched)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
        s.step()
    _assert_equal(fresh_model.state_dict(), model.state_dict())
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    assert fresh_scaler.get_scale() == scaler.get_scale()


def _draws():
    return (torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)])


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # numpy now holds a cached gaussian, part of its state
    _draws()
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_state()})
    expected = _draws()
    expected_gauss = np.random.randn()
    _draws()  # move every generator on
    set_rng_state(load_checkpoint(path)["rng"])
    assert _draws() == expected
    assert np.random.randn() == expected_gauss


def test_named_loader_generator_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(
        torch.arange(20), batch_size=4, shuffle=True, generator=generator
    )
    next(iter(loader))  # the generator has moved on from its seed
    path = tmp_path / "loader.pt"
    save_checkpoint(path, {"rng": rng_state({"train_loader": generator})})
    epoch = [b.tolist() for b in loader]
    assert [b.tolist() for b in loader] != epoch  # a new epoch shuffles differently
    generator.manual_seed(99)  # as a fresh process would build it
    set_rng_state(load_checkpoint(path)["rng"], {"train_loader": generator})
    assert [b.tolist() for b in loader] == epoch


def test_unknown_generator_is_refused():
    state = rng_state({"train_loader": torch.Generator()})
    with pytest.raises(CheckpointError, match=r"no generator 'eval_loader'.*train_loader"):
        set_rng_state(state, {"eval_loader": torch.Generator()})


def test_cuda_state_is_not_touched_when_cuda_is_not_initialised():
    if torch.cuda.is_initialized():
        pytest.skip("CUDA already initialised in this process")
    assert rng_state()["cuda"] is None
    assert not torch.cuda.is_initialized()


def test_a_failed_write_keeps_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path / "r.csv", 1)
    save_checkpoint(path, {"step": 10, "w": torch.ones(3)})
    before = path.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, fh, *args, **kwargs):
        real_save(obj, fh, *args, **kwargs)
        fh.truncate(fh.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 20, "w": torch.zeros(3)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert load_checkpoint(path)["step"] == 10


def test_an_interrupt_mid_write_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "c" / "run-0000.pt"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 1})
    assert list(path.parent.iterdir()) == []


def test_a_new_checkpoint_replaces_the_old(tmp_path):
    path = tmp_path / "run-0000.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run-0000.pt"]


def test_load_errors_name_the_file_and_the_cause(tmp_path):
    missing = tmp_path / "run-0009.pt"
    with pytest.raises(CheckpointError, match=r"run-0009\.pt: no such checkpoint$"):
        load_checkpoint(missing)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a torch file at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a loadable checkpoint \(") as info:
        load_checkpoint(junk)
    assert "\n" not in str(info.value)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "obj": _Opaque()}, unsafe)
    with pytest.raises(CheckpointError, match=r"unsafe\.pt: not a loadable checkpoint") as info:
        load_checkpoint(unsafe)
    assert "\n" not in str(info.value)
    plain = tmp_path / "plain.pt"
    torch.save([1, 2], plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt: not a deqbench run checkpoint"):
        load_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({"format": CHECKPOINT_FORMAT + 1, "deqbench": "9.0"}, future)
    with pytest.raises(CheckpointError, match=r"future\.pt: checkpoint format 2 .*reads format 1"):
        load_checkpoint(future)


class _Opaque:
    """A pickled class that weights_only refuses."""


def test_remove_checkpoint_clears_the_folder_when_empty(tmp_path):
    report = tmp_path / "r.csv"
    first, second = checkpoint_path(report, 0), checkpoint_path(report, 1)
    save_checkpoint(first, {"step": 1})
    save_checkpoint(second, {"step": 1})
    stale = first.parent / f".{first.name}.abc123.tmp"  # a write killed by SIGKILL
    stale.write_bytes(b"half")
    remove_checkpoint(first)
    assert not first.exists() and not stale.exists() and second.exists()
    remove_checkpoint(second)
    assert not checkpoint_dir(report).exists()
    remove_checkpoint(second)  # already gone: fine
    remove_checkpoint(tmp_path / "nowhere" / "run-0000.pt")
