"""Dataset plugins: ImageNet, CIFAR-10, Cityscapes, scikit-learn's digits and synthetic data.

Registered as ``"module:attr"`` strings so that listing them imports neither torch nor
torchvision. Each factory is called as ``factory(*, root=None, image_size=None, **options)``
and returns a `deqbench.data.DataSource`.
"""

from __future__ import annotations

from deqbench.hookspecs import hookimpl

_PKG = "deqbench_plugins.datasets"

DATASETS = (
    (
        "imagenet",
        f"{_PKG}.imagenet:ImageNet",
        "ImageNet class folders ROOT/{train,val}/<class>/ (root or IMAGENET_ROOT): "
        "classification, one class per folder (1000), no ignore index, splits train/val; "
        "train: random-resized crop + flip, val: resize 256/224·size + center crop "
        "(image_size, default 224)",
    ),
    (
        "cifar10",
        f"{_PKG}.cifar10:Cifar10",
        "CIFAR-10 python batches ROOT/cifar-10-batches-py (root or CIFAR10_ROOT): "
        "classification, 10 classes, no ignore index, splits train/test; "
        "option augment (default false): random crop pad 4 + flip",
    ),
    (
        "cityscapes",
        f"{_PKG}.cityscapes:Cityscapes",
        "Cityscapes fine ROOT/leftImg8bit + ROOT/gtFine (root or CITYSCAPES_ROOT): "
        "segmentation, 19 train ids, ignore index 255, splits train/val; "
        "train: random scale 0.5–2.0, crop (option crop_size, default [512, 1024]), flip; "
        "val at full resolution",
    ),
    (
        "digits",
        f"{_PKG}.digits:Digits",
        "scikit-learn's 1,797 handwritten 8×8 digits (bundled, no root): classification, "
        "10 classes, 1 channel, no ignore index, splits train/test (stratified 80/20, "
        "option seed); upsampled to image_size (default 32)",
    ),
    (
        "synthetic",
        f"{_PKG}.synthetic:Synthetic",
        "generated, in memory: option task = classification (10 classes, class patterns "
        "+ noise; no ignore index) or segmentation (4 classes, shapes on a background; "
        "ignore index 255), splits train/val; options num_classes, length, eval_length, "
        "channels, noise, seed",
    ),
)


@hookimpl
def register_datasets(register):
    for name, target, description in DATASETS:
        register(name, target, description=description)
