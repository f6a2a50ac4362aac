"""The detection and segmentation metrics against independent references: pycocotools'
COCOeval for mAP, a confusion matrix computed here with numpy for mIoU and Dice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from components.tasks import TASKS
from components.tasks.segmentation import IGNORE_INDEX

CLASSES = ["background", "circle", "square", "triangle"]


def detection_case(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """8 images, 3 classes: jittered true boxes (some badly), misses, false positives and
    duplicates, with distinct scores (ties would make the ranking ambiguous)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(8):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 80, size=(n, 2))
        wh = rng.uniform(8, 40, size=(n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, 4, size=n)
        boxes, pred_labels = [], []
        for box, label in zip(gt, labels, strict=True):
            if rng.random() < 0.2:  # a miss
                continue
            boxes.append(box + rng.normal(0, rng.choice([1.0, 4.0, 8.0]), size=4))
            pred_labels.append(label if rng.random() < 0.85 else rng.integers(1, 4))  # some wrong class
            if rng.random() < 0.2:  # a duplicate
                boxes.append(box + rng.normal(0, 2.0, size=4))
                pred_labels.append(label)
        for _ in range(int(rng.integers(0, 3))):  # false positives anywhere
            xy = rng.uniform(0, 80, size=2)
            boxes.append(np.concatenate([xy, xy + rng.uniform(8, 40, size=2)]))
            pred_labels.append(rng.integers(1, 4))
        boxes = np.array(boxes).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        targets.append({"boxes": tv_tensors.BoundingBoxes(torch.tensor(gt, dtype=torch.float32), format="XYXY", canvas_size=(128, 128)),
                        "labels": torch.tensor(labels, dtype=torch.int64)})
        preds.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(np.array(pred_labels), dtype=torch.int64),
                      "scores": torch.tensor(rng.permutation(np.linspace(0.05, 0.99, len(boxes))), dtype=torch.float32)})
    return preds, targets


def cocoeval_reference(preds: list[dict], targets: list[dict]) -> tuple[np.ndarray, dict[int, float]]:
    """pycocotools: stats (AP@[.5:.95], AP50, AP75, ...) and per-class AP@[.5:.95]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        x0, y0, x1, y1 = (float(v) for v in b)
        return [x0, y0, x1 - x0, y1 - y0]

    images = [{"id": i + 1, "width": 128, "height": 128} for i in range(len(targets))]
    anns = [{"id": len(images) * 100 + k, "image_id": i + 1, "category_id": int(label), "bbox": xywh(box), "area": xywh(box)[2] * xywh(box)[3], "iscrowd": 0}
            for i, t in enumerate(targets) for k, (box, label) in enumerate(zip(t["boxes"], t["labels"], strict=True))]
    for k, ann in enumerate(anns):
        ann["id"] = k + 1
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c, "name": CLASSES[c]} for c in (1, 2, 3)]}
    gt.createIndex()
    dets = [{"image_id": i + 1, "category_id": int(label), "bbox": xywh(box), "score": float(score)}
            for i, p in enumerate(preds) for box, label, score in zip(p["boxes"], p["labels"], p["scores"], strict=True)]
    evaluator = COCOeval(gt, gt.loadRes(dets), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area all, maxDets 100
    per_class = {cat: float(precision[:, :, k][precision[:, :, k] > -1].mean()) for k, cat in enumerate(evaluator.params.catIds)}
    return evaluator.stats, per_class


def test_detection_map_agrees_with_pycocotools():
    preds, targets = detection_case()
    spec = TASKS["detection"]
    metric = spec.make_metric(len(CLASSES))
    metric.update(preds[:5], targets[:5])  # in two batches, as during evaluation
    metric.update(preds[5:], targets[5:])
    ours = spec.summarize(metric.compute(), CLASSES)
    stats, per_class = cocoeval_reference(preds, targets)
    assert 0.2 < stats[0] < 0.95, "a non-trivial case: neither perfect nor hopeless"
    assert ours["map"] == pytest.approx(stats[0], abs=1e-4)
    assert ours["map_50"] == pytest.approx(stats[1], abs=1e-4)
    assert ours["map_75"] == pytest.approx(stats[2], abs=1e-4)
    for cat, ap in per_class.items():
        assert ours[f"ap/{CLASSES[cat]}"] == pytest.approx(ap, abs=1e-4), CLASSES[cat]


def reference_iou_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[dict[int, float], dict[int, float]]:
    """Per-class IoU and Dice over classes present in pred or target, ignoring IGNORE_INDEX."""
    valid = target != IGNORE_INDEX
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (target[valid], pred[valid]), 1)
    iou, dice = {}, {}
    for c in range(num_classes):
        tp = confusion[c, c]
        fp = confusion[:, c].sum() - tp
        fn = confusion[c, :].sum() - tp
        if tp + fp + fn:
            iou[c] = tp / (tp + fp + fn)
            dice[c] = 2 * tp / (2 * tp + fp + fn)
    return iou, dice


def test_segmentation_miou_and_dice_against_a_confusion_matrix():
    classes = [*CLASSES, "hexagon"]  # class 4 appears in neither prediction nor target
    rng = np.random.default_rng(3)
    target = rng.integers(0, 4, size=(4, 32, 32))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, size=target.shape))
    target[:, :4, :] = IGNORE_INDEX  # ignored pixels, whatever is predicted there
    pred[:, :4, :4] = 2
    spec = TASKS["segmentation"]
    metric = spec.make_metric(len(classes))
    metric.update(torch.from_numpy(pred[:2]), torch.from_numpy(target[:2]))
    metric.update(torch.from_numpy(pred[2:]), torch.from_numpy(target[2:]))
    ours = spec.summarize(metric.compute(), classes)
    iou, dice = reference_iou_dice(pred, target, len(classes))
    assert 4 not in iou and "iou/hexagon" not in ours
    assert ours["miou"] == pytest.approx(np.mean(list(iou.values())), abs=1e-6)
    assert ours["dice"] == pytest.approx(np.mean(list(dice.values())), abs=1e-6)
    for c, value in iou.items():
        assert ours[f"iou/{classes[c]}"] == pytest.approx(value, abs=1e-6)


def _resample_case(task: str) -> tuple[object, object, list[str]]:
    """(preds, targets, classes) of a few dozen images, as predict_all keeps them."""
    rng = np.random.default_rng(5)
    if task == "detection":
        preds, targets = [], []
        for seed in range(4):  # 32 images; scores repeat across images (ties broken by image order)
            p, t = detection_case(seed)
            preds += p
            targets += t
        return preds, targets, CLASSES
    if task == "segmentation":
        target = rng.integers(0, 4, size=(24, 16, 16))
        pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, size=target.shape))
        target[:, :2] = IGNORE_INDEX
        return torch.from_numpy(pred), torch.from_numpy(target), CLASSES
    target = torch.from_numpy(rng.integers(0, 3, size=60))
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(60, 3))) + 0.8 * torch.nn.functional.one_hot(target, 3), dim=1).float()
    return probs, target, CLASSES[1:]


@pytest.mark.parametrize("task", list(TASKS))
def test_monitor_of_resamples_equals_the_metric_of_the_resampled_images(task):
    """The vectorised metric of fairness groups and bootstraps (counts of copies per image)
    against the task's metric on those images, and the generic per-multiset default."""
    from components.evaluation.predictions import metric_value, take
    from components.tasks.base import TaskSpec

    spec = TASKS[task]
    preds, targets, classes = _resample_case(task)
    n, rng = len(targets), np.random.default_rng(0)
    index = [np.sort(rng.choice(n, size=n, replace=True)) for _ in range(6)] + [np.arange(n), np.arange(0, n, 3)]
    counts = np.stack([np.bincount(i, minlength=n) for i in index])
    expected = [metric_value(spec, len(classes), classes, take(preds, i), take(targets, i))[spec.monitor] for i in index]
    assert min(expected) > 0.1 and max(expected) < 1, "a non-trivial case"
    assert spec.monitor_of_resamples(preds, targets, classes)(counts) == pytest.approx(expected, rel=1e-6)
    generic = TaskSpec.monitor_of_resamples(spec, preds, targets, classes)
    assert generic(counts[:2]) == pytest.approx(expected[:2], rel=1e-6)
