"""Registration of the dataset plugins, and the loaders the runner builds over them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from deqbench.cli import main
from deqbench.data import DatasetError, check_source, make_loader
from deqbench.plugins import get_registry, lookup
from deqbench.testing import corrupt_file, make_cifar10, make_imagenet_folder
from deqbench_plugins import datasets as datasets_plugin
from deqbench_plugins.datasets.synthetic import Synthetic

NAMES = ("cifar10", "cityscapes", "digits", "imagenet", "synthetic")


def test_registered_with_their_declaration(cli):
    entries = {e.name: e for e in get_registry().entries(["datasets"]) if e.plugin == "datasets"}
    assert set(entries) == set(NAMES)
    result = cli.invoke(main, ["list", "datasets", "--json"])
    assert result.exit_code == 0
    listed = {item["name"]: item["description"] for item in json.loads(result.output)}
    for name in NAMES:
        description = listed[name]
        assert "classification" in description or "segmentation" in description
        assert "ignore index" in description and "splits " in description
    assert "19 train ids, ignore index 255, splits train/val" in listed["cityscapes"]


def test_listing_imports_no_data_libraries():
    # The entry module registers "module:attr" strings; only the hook marker is imported.
    tree = ast.parse(Path(datasets_plugin.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"__future__", "deqbench.hookspecs"}
    for name, target, _ in datasets_plugin.DATASETS:
        assert lookup("datasets", name).target == target  # resolvable "module:attr"
        assert isinstance(lookup("datasets", name).obj, type)


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def test_loader_with_workers_is_deterministic_for_a_seed(tmp_path):
    make_cifar10(tmp_path, n=4)
    train = lookup("datasets", "cifar10").obj(root=tmp_path, augment=True).dataset("train")

    def epochs(seed: int) -> list:
        loader = make_loader(train, batch_size=5, shuffle=True, workers=2, seed=seed)
        return _batches(loader) + _batches(loader)  # two epochs of the persistent workers

    first, again, other = epochs(7), epochs(7), epochs(8)
    assert len(first) == 8
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # order and augmentation alike
    assert not all(torch.equal(x, x2) for (x, _), (x2, _) in zip(first, other, strict=True))
    labels = [torch.cat([y for _, y in first[:4]]), torch.cat([y for _, y in first[4:]])]
    assert sorted(labels[0].tolist()) == sorted(labels[1].tolist())  # each epoch: every sample


def test_loader_takes_a_distributed_sampler():
    data = lookup("datasets", "synthetic").obj(length=12, image_size=4).dataset("train")
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = make_loader(data, batch_size=4, shuffle=True, sampler=sampler)
        seen.append(torch.cat([images for images, _ in loader]))
    assert [len(s) for s in seen] == [6, 6]
    every = torch.cat(seen).flatten(1)
    assert len(torch.unique(every, dim=0)) == 12  # the two ranks split the data


def test_corrupt_file_in_a_worker_is_one_line_naming_it(tmp_path):
    make_imagenet_folder(tmp_path, classes=2, per_class=2)
    bad = corrupt_file(tmp_path / "val" / "n00000001" / "n00000001_0.JPEG")
    val = lookup("datasets", "imagenet").obj(root=tmp_path, image_size=16).dataset("val")
    with pytest.raises(DatasetError) as caught:
        _batches(make_loader(val, batch_size=2, shuffle=False, workers=1))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"corrupt image {bad}") and "worker process 0" in message


def test_dataset_error_keeps_plain_messages():
    assert str(DatasetError("root /x is missing")) == "root /x is missing"


def test_every_shipped_dataset_has_a_check():
    for name in NAMES:
        assert callable(lookup("datasets", name).obj.check)


def test_check_source_checks_with_check_else_builds(tmp_path, monkeypatch):
    make_imagenet_folder(tmp_path, classes=2, per_class=1)
    imagenet = lookup("datasets", "imagenet").obj
    monkeypatch.setattr(imagenet, "_scan", lambda *args: pytest.fail("built the source"))
    assert check_source(imagenet, root=tmp_path, image_size=16, options={}) is None
    with pytest.raises(DatasetError, match="nowhere is not a directory"):
        check_source(imagenet, root=tmp_path / "nowhere", image_size=16, options={})

    calls = []

    def synthetic(**kwargs):  # a factory without check: built, and the source returned
        calls.append(kwargs)
        return Synthetic(**kwargs)

    source = check_source(synthetic, root=None, image_size=8, options={"length": 4})
    assert isinstance(source, Synthetic) and len(source.dataset("train")) == 4
    assert calls == [{"root": None, "image_size": 8, "length": 4}]

    synthetic.check = lambda **kwargs: calls.append(("check", kwargs))  # a function attribute
    assert check_source(synthetic, root="/data", image_size=None, options={"seed": 1}) is None
    assert calls[1:] == [("check", {"root": "/data", "image_size": None, "seed": 1})]
