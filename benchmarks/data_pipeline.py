"""What deqbench's ImageNet data path costs: it against plain torchvision, side by side.

Both read the same generated JPEG folder (ImageNet-like: 500×375 photos-ish, quality 90) with
the same training transforms (random-resized crop 224, flip, to float, normalize):

- deqbench: the registered ``imagenet`` dataset plugin + ``deqbench.data.make_loader``;
- torchvision: ``ImageFolder`` + ``DataLoader`` written as a torchvision user would.

For each worker count, the two alternate epoch by epoch (``--repeats`` timed epochs each, after
one warm-up epoch that also starts the persistent workers). Printed: images/s (median and
range) of each and the ratio deqbench / torchvision, as a markdown table; a last row times
only the image reader of each (the one step where the two run different code).

    python benchmarks/data_pipeline.py                      # 0, 1, 2 workers
    python benchmarks/data_pipeline.py --workers 0 4 8 --images 1024 --root /tmp/jpegs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from deqbench.data import make_loader
from deqbench.plugins import lookup


def make_jpegs(root: Path, images: int, classes: int, size: tuple[int, int], seed: int) -> None:
    """Smooth random scenes plus grain, so that decoding costs what a photo's does."""
    rng = np.random.default_rng(seed)
    height, width = size
    for i in range(images):
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        scene = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        grain = rng.normal(0, 12, size=scene.shape)
        pixels = np.clip(scene + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.JPEG", quality=90)
    for c in range(classes):  # the plugin checks that val/ exists with the same classes
        (root / "val" / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        first = next((root / "train" / f"n{c:08d}").iterdir())
        (root / "val" / f"n{c:08d}" / first.name).write_bytes(first.read_bytes())


def plain_torchvision(root: Path, image_size: int, batch: int, workers: int) -> DataLoader:
    transform = v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = ImageFolder(root / "train", transform=transform)
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def deqbench_loader(root: Path, image_size: int, batch: int, workers: int) -> DataLoader:
    source = lookup("datasets", "imagenet").obj(root=root, image_size=image_size)
    return make_loader(
        source.dataset(source.info.train_split),
        batch_size=batch,
        shuffle=True,
        workers=workers,
        seed=0,
    )


def epoch_rate(loader: DataLoader) -> float:
    """Images per second over one pass of ``loader``."""
    count, start = 0, time.perf_counter()
    for images, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - start)


def decode_rates(files: list[str], repeats: int) -> tuple[list[float], list[float]]:
    """Files/s of the plugin's image reader and of torchvision's ``pil_loader``: the one step
    where the two pipelines run different code. They alternate file by file, so that drift in
    the machine's speed falls on both alike."""
    from torchvision.datasets.folder import pil_loader

    from deqbench_plugins.datasets.common import open_image

    rates: dict[str, list[float]] = {"deqbench": [], "torchvision": []}
    readers = {"deqbench": open_image, "torchvision": pil_loader}
    for _ in range(repeats):
        spent = dict.fromkeys(readers, 0.0)
        for i, path in enumerate(files):
            for name in list(readers)[:: 1 if i % 2 == 0 else -1]:
                start = time.perf_counter()
                readers[name](path)
                spent[name] += time.perf_counter() - start
        for name, seconds in spent.items():
            rates[name].append(len(files) / seconds)
    return rates["deqbench"], rates["torchvision"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", type=Path, help="reuse (or create) the JPEG folder here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker: the decode path, not intra-op threads

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        if not (root / "train").is_dir():
            make_jpegs(root, args.images, args.classes, tuple(args.size), seed=0)
        files = [path for path, _ in ImageFolder(root / "train").samples]
        count = len(files)
        decode = decode_rates(files, args.repeats)
        rows = []
        for workers in args.workers:
            loaders = {
                "deqbench": deqbench_loader(root, args.image_size, args.batch, workers),
                "torchvision": plain_torchvision(root, args.image_size, args.batch, workers),
            }
            rates: dict[str, list[float]] = {name: [] for name in loaders}
            for loader in loaders.values():
                epoch_rate(loader)  # warm-up: caches, and the persistent workers start
            for repeat in range(args.repeats):
                order = list(loaders) if repeat % 2 == 0 else list(loaders)[::-1]
                for name in order:
                    rates[name].append(epoch_rate(loaders[name]))
            ours, theirs = rates["deqbench"], rates["torchvision"]
            # The ratio of each side-by-side pair, so that drift of the machine cancels.
            ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
            rows.append((workers, ours, theirs, ratios))
            del loaders

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

    print(
        f"{count} JPEGs "
        f"{args.size[1]}×{args.size[0]}, crop {args.image_size}, batch {args.batch}, "
        f"{args.repeats} timed epochs each, torch {torch.__version__}"
    )
    print("| workers | deqbench images/s | torchvision images/s | deqbench / torchvision |")
    print("|---|---|---|---|")
    for workers, ours, theirs, ratios in rows:
        ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"
        print(f"| {workers} | {cell(ours)} | {cell(theirs)} | {ratio} |")
    ours, theirs = decode
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"
    print(f"| decode only, in process | {cell(ours)} | {cell(theirs)} | {ratio} |")


if __name__ == "__main__":
    main()
