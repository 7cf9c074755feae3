"""Task losses and metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from deqbench.runs.train.metrics import (
    EvalMeter,
    confusion_matrix,
    miou,
    pixel_accuracy,
    task_loss,
    topk_correct,
)


def test_topk_on_a_crafted_batch():
    # 4 samples, 6 classes; the label's rank is 1, 2, 5 and 6 respectively.
    logits = torch.tensor(
        [
            [9.0, 1, 2, 3, 4, 5],  # label 0: best
            [1.0, 9, 8, 2, 3, 4],  # label 2: second
            [6.0, 5, 4, 3, 2, 1],  # label 4: fifth
            [6.0, 5, 4, 3, 2, 1],  # label 5: last
        ]
    )
    target = torch.tensor([0, 2, 4, 5])
    assert topk_correct(logits, target, ks=(1, 2, 5)).tolist() == [1, 2, 3]
    meter = EvalMeter("classification", 6, None, torch.device("cpu"))
    meter.update(logits, target)
    out = meter.result()
    assert out["eval_top1"] == pytest.approx(25.0) and out["eval_top5"] == pytest.approx(75.0)
    # 95 % Wilson intervals of 1 of 4 and 3 of 4 (mirror images of each other), over 4 samples
    ci = [round(out[f"eval_top{k}_ci_{end}"], 2) for k in (1, 5) for end in ("low", "high")]
    assert ci == [4.56, 69.94, 30.06, 95.44] and out["eval_count"] == 4
    assert out["eval_loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target))
    )


def test_topk_caps_k_at_the_class_count():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    assert topk_correct(logits, torch.tensor([0])).tolist() == [0, 1]


def test_miou_and_pixel_accuracy_skip_the_ignore_label():
    target = torch.tensor([[0, 1], [255, 2]])
    pred = torch.tensor([[0, 2], [1, 2]])
    conf = confusion_matrix(pred, target, num_classes=3, ignore_index=255)
    # counted pixels (true, pred): (0, 0), (1, 2), (2, 2); the 255 pixel is skipped
    assert conf.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    # IoU: class 0 1/1, class 1 0/1, class 2 1/(1 + 1) -> mean 0.5
    assert miou(conf) == pytest.approx(0.5)
    assert pixel_accuracy(conf) == pytest.approx(2 / 3)


def test_a_class_absent_from_labels_and_predictions_has_no_iou():
    conf = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), num_classes=4)
    assert miou(conf) == pytest.approx(1.0)


def test_segmentation_loss_upsamples_to_the_label_and_ignores_255():
    # constant logits [0, log 3]: p(1) = 3/4 everywhere, at any resolution
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = math.log(3)
    target = torch.full((1, 4, 4), 255, dtype=torch.int64)
    target[0, 0, :3] = 1  # three pixels of class 1
    target[0, 1, :1] = 0  # one pixel of class 0
    expected = (3 * -math.log(0.75) - math.log(0.25)) / 4
    loss = task_loss(logits, target, task="segmentation")
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    meter = EvalMeter("segmentation", 2, 255, torch.device("cpu"))
    meter.update(logits, target)
    out = meter.result()
    # every labelled pixel is predicted 1: class 1 IoU 3/4, class 0 IoU 0
    assert out["eval_pixel_acc"] == pytest.approx(75.0)
    assert out["eval_miou"] == pytest.approx(37.5)
    # one image evaluated; pixel accuracy and mIoU get no binomial interval
    assert out["eval_count"] == 1 and not any(k.endswith("_ci_low") for k in out)


def test_label_smoothing_reaches_the_loss():
    logits = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([0])
    p = torch.softmax(logits, 1)[0]
    # smoothing 0.2 over 2 classes: target (0.9, 0.1)
    expected = -(0.9 * math.log(p[0]) + 0.1 * math.log(p[1]))
    assert float(task_loss(logits, target, label_smoothing=0.2)) == pytest.approx(expected)
