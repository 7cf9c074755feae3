"""The MDEQ variants as data: every number, and the published config it comes from.

Torch-free, so that `deqbench list models -v` can show it without importing torch.

Each published variant takes all of its numbers (architecture, iteration caps, dropout, the
warm-up's L) from one config file of one repository, named in its `Variant.source`:

- ``locuslab/mdeq`` at 20e8a40, the code of the MDEQ paper (NeurIPS 2020), for every variant
  it ships. Its parameter counts were measured on builds of those configs with that code, and
  deqbench's counts equal them exactly (tests/plugins/test_mdeq_models.py).
- ``locuslab/deq`` (MDEQ-Vision, the later "v2" code) for ImageNet large alone: locuslab/mdeq's
  ``cls_mdeq_LARGE.yaml`` builds the 88–704, E = 6 network of its XL config (90,463,280
  parameters), so the 80–640, E = 5 "large" of 67.1M exists only there.

CIFAR tiny's caps are locuslab/mdeq's 22/24 (locuslab/deq's version of that config caps at
18/20, and also drops the post-fusion GroupNorms' affine parameters: a different network).
"""

from __future__ import annotations

from dataclasses import dataclass

MDEQ_REPO = "locuslab/mdeq@20e8a40"
DEQ_REPO = "locuslab/deq@5dc171e (MDEQ-Vision)"


@dataclass(frozen=True)
class Variant:
    """One MDEQ configuration. ``source`` names the config every number comes from."""

    channels: tuple[int, ...]
    expansion: int
    head: str  #: default head: "classification" or "segmentation"
    head_channels: tuple[int, ...] = ()
    final_channels: int = 0
    unroll: int = 10  #: L of the unrolled warm-up (NUM_LAYERS)
    dropout: float = 0.0
    f_cap: int = 18  #: forward iteration cap (F_THRES)
    b_cap: int = 20  #: backward iteration cap (B_THRES)
    stem_stride: int = 1
    injection_layer: bool = True
    #: Trainable parameters of the reference's own build of ``source`` with its published
    #: class count (0: no reference build was measured).
    params: int = 0
    source: str = ""  #: repository and config file, or why there is none

    def describe(self) -> str:
        """One paragraph for `deqbench list models -v`."""
        head = self.head
        if self.head_channels:
            head += f" {','.join(map(str, self.head_channels))} → {self.final_channels}"
        params = f"{self.params:,} params (reference build)" if self.params else "params: –"
        return (
            f"branches {','.join(map(str, self.channels))}, E={self.expansion}, head {head}; "
            f"caps {self.f_cap}/{self.b_cap}, dropout {self.dropout:g}, warm-up L={self.unroll}, "
            f"stem stride {self.stem_stride}; {params}; from {self.source}"
        )


_SMALL = (32, 64, 128, 256)
_LARGE = (80, 160, 320, 640)
_XL = (88, 176, 352, 704)
_CLS, _SEG = "classification", "segmentation"


def _mdeq(path: str) -> str:
    return f"{MDEQ_REPO} experiments/{path}"


VARIANTS: dict[str, Variant] = {
    "cifar-tiny": Variant(
        (24, 24), 5, _CLS, (8, 16), 200, unroll=10, dropout=0.25, f_cap=22, b_cap=24,
        injection_layer=False, params=158_986, source=_mdeq("cifar/cls_mdeq_TINY.yaml"),
    ),
    "cifar-large": Variant(
        _SMALL, 5, _CLS, (14, 28, 56, 112), 1680, unroll=10, dropout=0.3, f_cap=18, b_cap=20,
        params=11_098_398, source=_mdeq("cifar/cls_mdeq_LARGE.yaml"),
    ),
    "imagenet-small": Variant(
        _SMALL, 5, _CLS, (24, 48, 96, 192), 2048, unroll=5, f_cap=26, b_cap=27, stem_stride=2,
        params=16_808_936, source=_mdeq("imagenet/cls_mdeq_SMALL.yaml"),
    ),
    "imagenet-large": Variant(
        _LARGE, 5, _CLS, (32, 64, 128, 256), 2048, unroll=4, f_cap=26, b_cap=27, stem_stride=2,
        source=f"{DEQ_REPO} experiments/imagenet/cls_mdeq_LARGE.yaml (67.1M published; "
        "no reference build measured)",
    ),
    "imagenet-xl": Variant(
        _XL, 6, _CLS, (32, 64, 128, 256), 2048, unroll=4, f_cap=27, b_cap=27, stem_stride=2,
        params=90_463_280, source=_mdeq("imagenet/cls_mdeq_XL.yaml"),
    ),
    "cityscapes-small": Variant(
        _SMALL, 5, _SEG, unroll=3, dropout=0.05, f_cap=27, b_cap=30, stem_stride=2,
        params=8_968_467, source=_mdeq("cityscapes/seg_mdeq_SMALL.yaml"),
    ),
    "cityscapes-large": Variant(
        _LARGE, 5, _SEG, unroll=3, dropout=0.03, f_cap=26, b_cap=26, stem_stride=2,
        params=55_955_859, source=_mdeq("cityscapes/seg_mdeq_LARGE.yaml"),
    ),
    "cityscapes-xl": Variant(
        _XL, 6, _SEG, unroll=3, dropout=0.04, f_cap=26, b_cap=26, stem_stride=2,
        params=79_551_755, source=_mdeq("cityscapes/seg_mdeq_XL.yaml"),
    ),
    # Not from the paper: sized for the CPU quick start on 32x32 digits. The stem halves twice
    # (32x32 digits hold 8x8 of information), so the solver runs at 8x8 and 4x4.
    "cpu-small": Variant(
        (16, 32), 2, _CLS, (8, 16), 64, unroll=6, f_cap=16, b_cap=16, stem_stride=2,
        source="deqbench's own (not a published config): sized for the CPU quick start",
    ),
}  # fmt: skip
