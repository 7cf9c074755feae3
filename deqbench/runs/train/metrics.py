"""Task losses and evaluation metrics: top-k accuracy, and mIoU and pixel accuracy from a
confusion matrix that skips an ignore label.

Metrics accumulate as device tensors (`EvalMeter.update` never reads a number back), so an
evaluation loop costs one host sync, at `EvalMeter.result`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deqbench.execution.distributed import Dist, all_reduce
from deqbench.report.noise import wilson_interval

#: The label segmentation datasets use for unlabelled pixels (Cityscapes' convention).
IGNORE_INDEX = 255


def task_loss(
    logits: Tensor,
    target: Tensor,
    *,
    task: str = "classification",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy; segmentation logits ``(B, K, h, w)`` are upsampled (bilinear) to the
    label's ``(H, W)`` first, and pixels labelled ``ignore_index`` (255 when None) are skipped.
    Half-precision logits are upcast to float32; float64 ones keep their precision."""
    if logits.dtype != torch.float64:
        logits = logits.float()
    if task == "segmentation":
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits, size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        ignore = IGNORE_INDEX if ignore_index is None else ignore_index
        return F.cross_entropy(logits, target, ignore_index=ignore, label_smoothing=label_smoothing)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """``(len(ks),)`` counts of samples whose label is among the ``k`` highest logits
    (k capped at the number of classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax), best first
    hit = top == target[:, None]
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = IGNORE_INDEX
) -> Tensor:
    """``(K, K)`` int64 counts, rows the true class and columns the predicted one; pixels
    labelled ``ignore_index`` (or outside ``[0, K)``) are not counted."""
    target, pred = target.reshape(-1), pred.reshape(-1)
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    idx = target[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(confusion: Tensor) -> float:
    """Mean over classes of TP / (TP + FP + FN), over the classes that occur in the labels
    or the predictions (a class absent from both has no IoU)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


def pixel_accuracy(confusion: Tensor) -> float:
    """Correct pixels over labelled (not ignored) pixels."""
    total = confusion.sum()
    return float(confusion.diag().sum() / total) if total > 0 else float("nan")


class EvalMeter:
    """Accumulates an evaluation on the device: loss sum, top-1/top-5 counts or a confusion
    matrix. ``result()`` returns percentages (``eval_top1``... as in the report), the 95 %
    Wilson interval of each top-k accuracy and ``eval_count``, the samples evaluated."""

    def __init__(
        self, task: str, num_classes: int, ignore_index: int | None, device: torch.device
    ) -> None:
        self.task, self.num_classes = task, num_classes
        self.ignore_index = IGNORE_INDEX if ignore_index is None else ignore_index
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros(2, dtype=torch.int64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.samples = 0

    def update(self, logits: Tensor, target: Tensor) -> None:
        n = target.shape[0]
        loss = task_loss(logits, target, task=self.task, ignore_index=self.ignore_index)
        self.loss_sum += loss.detach().double() * n
        self.samples += n
        if self.task == "segmentation":
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear")
            pred = logits.argmax(dim=1)
            self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        else:
            self.correct += topk_correct(logits, target)

    def reduce(self, dist: Dist) -> None:
        """Sum the counts over the ranks of a `deqbench.execution.distributed.Dist` (each evaluated
        its own share), so `result` covers the whole evaluation set."""
        if not dist.enabled:
            return
        for tensor in (self.loss_sum, self.correct, self.confusion):
            all_reduce(tensor)
        samples = torch.tensor(self.samples, dtype=torch.int64, device=self.loss_sum.device)
        self.samples = int(all_reduce(samples))

    def result(self) -> dict[str, float]:
        """The report's eval columns for this task (one host sync)."""
        if self.samples == 0:
            return {}
        out = {"eval_loss": float(self.loss_sum) / self.samples}
        if self.task == "segmentation":
            out["eval_miou"] = 100 * miou(self.confusion.cpu())
            out["eval_pixel_acc"] = 100 * pixel_accuracy(self.confusion.cpu())
        else:
            top1, top5 = self.correct.tolist()
            for name, hits in (("eval_top1", top1), ("eval_top5", top5)):
                out[name] = 100 * hits / self.samples
                low, high = wilson_interval(hits, self.samples)
                out[f"{name}_ci_low"], out[f"{name}_ci_high"] = 100 * low, 100 * high
        out["eval_count"] = self.samples
        return out
