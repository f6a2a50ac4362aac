"""Object detection: boxes with class labels.

On disk: COCO JSON per split in `annotations/<split>.json` (bbox as [x, y, w, h] in pixels;
the sensitive attribute as `group` in each image entry) next to the images.
Record: {"path", "split", "group", "boxes": [[x1, y1, x2, y2], ...], "labels": [name, ...]}.
Target: {"boxes": tv_tensors.BoundingBoxes XYXY [K, 4], "labels": int64 [K]}, with class
ids 1..C (0 is the background, as torchvision's detectors expect).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.tasks import MONITORS
from components.tasks.base import Lazy, TaskSpec

if TYPE_CHECKING:  # torch and torchvision load with the methods that use them (detectors.py: models, metric)
    import torch
    import torchmetrics
    from torch import nn

SPLITS = ("train", "val", "test")


def read_coco_records(root: Path) -> list[dict[str, Any]]:
    """One record per image entry of annotations/<split>.json, boxes converted to XYXY."""
    records = []
    for split in SPLITS:
        path = root / "annotations" / f"{split}.json"
        if not path.exists():
            continue
        coco = json.loads(path.read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        by_image: dict[Any, list[dict]] = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        for image in coco["images"]:
            anns = [a for a in by_image.get(image["id"], []) if not a.get("iscrowd", 0)]
            records.append({
                "path": image["file_name"], "split": split, "group": image.get("group", ""),
                "width": image.get("width"), "height": image.get("height"),
                "boxes": [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                "labels": [names[a["category_id"]] for a in anns],
            })
    return records


OVERLAY_SCORE = 0.5  # boxes drawn on overlays; metrics and serving keep every box


def _zoo() -> dict[str, Lazy]:
    zoo: dict[str, Lazy] = {}
    for detector in ("fcos", "retinanet", "fasterrcnn"):  # '<detector>_<backbone>': configurable backbone
        for backbone in ("small", "resnet18", "resnet34", "resnet50"):
            zoo[f"{detector}_{backbone}"] = Lazy("components.tasks.detectors:custom", detector, backbone)
    none = {"weights": None, "weights_backbone": None}
    for name in ("fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2",
                 "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large"):
        zoo[name] = Lazy("components.tasks.detectors:as_is", name, **none)
    return zoo


COCO_RECALLS = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds


def _coco_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """COCOeval's IoU [D, G] of XYXY boxes, through [x, y, w, h] as torchmetrics hands them
    over (w, h computed in float32), the rest in float64."""
    d, g = (np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).astype(np.float64) for b in (dt, gt))
    w = np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    h = np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = w.clip(min=0) * h.clip(min=0)
    return inter / ((d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None, :] - inter)


def coco_matches(preds: list[dict[str, Any]], targets: list[dict[str, Any]], iou_threshold: float,
                 max_dets: int = 100) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """COCOeval.evaluateImg at one IoU threshold (area range all): per class, (image [D],
    score [D], matched [D]) of the detections in image order, best score first within an
    image (its first max_dets), and the ground-truth count per image [N]."""
    import torch

    parts: dict[int, tuple[list, list, list, np.ndarray]] = {}
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        boxes, scores, labels = (pred[k].cpu().numpy() for k in ("boxes", "scores", "labels"))
        gt_boxes, gt_labels = target["boxes"].as_subclass(torch.Tensor).cpu().numpy(), target["labels"].cpu().numpy()
        for c in np.union1d(labels, gt_labels).tolist():
            dt, gt = np.flatnonzero(labels == c), np.flatnonzero(gt_labels == c)
            dt = dt[np.argsort(-scores[dt], kind="mergesort")][:max_dets]
            matched = np.zeros(len(dt), dtype=bool)
            if len(dt) and len(gt):
                ious, free = _coco_iou(boxes[dt], gt_boxes[gt]), np.ones(len(gt), dtype=bool)
                for d in range(len(dt)):  # greedy, best score first: the free ground truth of highest IoU (last on ties)
                    candidates = np.where(free, ious[d], -1.0)
                    m = len(gt) - 1 - int(np.argmax(candidates[::-1]))
                    if candidates[m] >= min(iou_threshold, 1 - 1e-10):
                        free[m], matched[d] = False, True
            images, det_scores, hits, gt_count = parts.setdefault(c, ([], [], [], np.zeros(len(preds))))
            images.append(np.full(len(dt), i))
            det_scores.append(scores[dt].astype(np.float64))
            hits.append(matched)
            gt_count[i] = len(gt)
    return {c: (np.concatenate(a), np.concatenate(b), np.concatenate(m), g) for c, (a, b, m, g) in parts.items()}


def average_precision(tp: np.ndarray, fp: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """COCOeval.accumulate's 101-point interpolated AP of each row: tp, fp [B, D] cumulative
    true / false positives over the detections in score order, positives [B] the ground
    truths; NaN where there are none."""
    ap = np.full(len(tp), np.nan)
    if tp.shape[1] == 0:
        return np.where(positives > 0, 0.0, ap)
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # the precision envelope
    for b in np.flatnonzero(positives > 0):
        at = np.searchsorted(tp[b] / positives[b], COCO_RECALLS, side="left")
        ap[b] = np.where(at < tp.shape[1], precision[b, np.minimum(at, tp.shape[1] - 1)], 0.0).mean()
    return ap


class DetectionTask(TaskSpec):
    name = "detection"
    monitor = MONITORS["detection"]
    models = _zoo()

    # ---- reading and targets

    def read_records(self, root: Path) -> list[dict[str, Any]]:
        return read_coco_records(root)

    def record_classes(self, record: dict[str, Any]) -> list[str]:
        return list(record["labels"])

    def class_names(self, declared: list[str]) -> list[str]:
        return ["background", *declared]

    def annotation_rows(self, record, root, width, height) -> list[dict[str, Any]]:
        """One "box" row per box: XYXY pixels and its area (0 when degenerate)."""
        return [
            {"kind": "box", "label": name, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
             "area": max(0.0, x2 - x1) * max(0.0, y2 - y1)}
            for (x1, y1, x2, y2), name in zip(record["boxes"], record["labels"], strict=True)
        ]

    def load_target(self, record, root, size, class_to_idx) -> dict[str, Any]:
        import torch
        from torchvision import tv_tensors

        boxes = torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size),
            "labels": torch.tensor([class_to_idx[name] for name in record["labels"]], dtype=torch.int64),
        }

    def target_transforms(self) -> list[Any]:
        from torchvision.transforms import v2

        return [v2.SanitizeBoundingBoxes(min_size=1)]  # drop boxes an augmentation cut away

    def collate(self, batch):
        import torch

        images, targets = zip(*batch, strict=True)
        return torch.stack(images), list(targets)

    # ---- model, loss, metrics

    def backbone_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        backbone = model.backbone
        return list(getattr(backbone, "body", backbone).parameters())  # FPN and heads train fully

    def loss(self, model: nn.Module, images: torch.Tensor, targets: list[dict[str, Any]]) -> torch.Tensor:
        from components.tasks.detectors import plain

        losses = model(list(images), plain(targets, images.device))  # train mode: a dict of losses
        return sum(losses.values())

    def predict(self, model: nn.Module, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image {"boxes": XYXY [K, 4] in input pixels, "scores": [K], "labels": [K]
        (1..C)}, plus "canvas": (H, W) of the input, to scale boxes back for serving."""
        out = model(list(images))
        return [{**{k: v.detach() for k, v in o.items()}, "canvas": tuple(images.shape[-2:])} for o in out]

    def format_predictions(self, preds, classes, sizes):
        # boxes back through the inverse of the input's letterbox
        from components.data.letterbox import boxes_to_original

        records = []
        for pred, size in zip(preds, sizes, strict=True):
            boxes = boxes_to_original(pred["boxes"].cpu().reshape(-1, 4), pred["canvas"], size)
            records.append({"detections": [
                {"label": classes[int(label)], "score": round(float(score), 4), "box": [round(float(v), 2) for v in box]}
                for box, score, label in zip(boxes, pred["scores"].cpu(), pred["labels"].cpu(), strict=True)
            ]})
        return records

    def make_metric(self, num_classes: int) -> torchmetrics.Metric:
        from components.tasks.detectors import DetectionMAP

        return DetectionMAP(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="faster_coco_eval")

    def summarize(self, computed: dict[str, torch.Tensor], classes: list[str]) -> dict[str, float]:
        """map (@[.5:.95]), map_50, map_75, mar_100 and ap/<class> (classes with ground truth)."""
        out = {k: float(computed[k]) for k in ("map", "map_50", "map_75", "mar_100")}
        for cls, ap in zip(computed["classes"].reshape(-1).tolist(), computed["map_per_class"].reshape(-1).tolist(), strict=True):
            if ap >= 0:  # -1: no ground truth of that class
                out[f"ap/{classes[int(cls)]}"] = float(ap)
        return out

    def monitor_of_resamples(self, preds, targets, classes):
        """mAP50 of multisets of images as pycocotools' COCOeval computes it, with the matching
        done once: per class, cumulative sums of copies over the detections in score order
        (exact score ties broken by image order, as COCOeval's stable sort does; faster-coco-eval,
        behind `make_metric`, orders them its own way: 0 to 8e-4 apart on the demo's test
        split and its groups, where this one equals pycocotools)."""
        if self.monitor != "map_50":
            return super().monitor_of_resamples(preds, targets, classes)
        per_class = []
        for image, score, matched, gts in coco_matches(preds, targets, 0.5).values():
            order = np.argsort(-score, kind="mergesort")
            per_class.append((image[order], matched[order], gts))

        def fn(counts: np.ndarray) -> np.ndarray:
            counts = np.asarray(counts, dtype=np.float64)
            ap = np.full((max(1, len(per_class)), len(counts)), np.nan)  # [class, multiset]
            for k, (image, matched, gts) in enumerate(per_class):
                step = max(1, 2**22 // max(len(image), 1))  # multisets at a time: ~32 MB of copies
                for start in range(0, len(counts), step):
                    rows = counts[start:start + step]
                    copies = rows[:, image]
                    ap[k, start:start + step] = average_precision(
                        np.cumsum(copies * matched, axis=1), np.cumsum(copies * ~matched, axis=1), rows @ gts)
            valid = ~np.isnan(ap)
            return np.where(valid.any(axis=0), np.nansum(ap, axis=0) / np.maximum(valid.sum(axis=0), 1), -1.0)

        return fn

    def draw(self, image, record, classes, target=None) -> torch.Tensor:
        """image | ground truth (dashed) | prediction (solid, 'class score'; the ground truth
        as thin white dashes beneath, so a miss is a dashed box with no solid one)."""
        import components.tasks.drawing as drawing

        picture = drawing.to_pil(image)
        dets = record["detections"]
        pred = drawing.boxes_panel(picture, [d["box"] for d in dets], [classes.index(d["label"]) for d in dets], classes,
                                   scores=[d["score"] for d in dets],
                                   reference=[] if target is None else target["boxes"].tolist())
        pred_title = f"prediction: {len(dets)} box{'es' * (len(dets) != 1)}"
        if target is None:
            return drawing.row([drawing.titled(drawing.enlarged(picture)[0], "image"), drawing.titled(pred, pred_title)])
        truth = drawing.boxes_panel(picture, target["boxes"].tolist(), [int(c) for c in target["labels"]], classes)
        return drawing.row([drawing.titled(drawing.enlarged(picture)[0], "image"),
                            drawing.titled(truth, f"ground truth: {len(target['labels'])}"), drawing.titled(pred, pred_title)])

    def draw_legend(self, classes):
        import components.tasks.drawing as drawing

        return [*drawing.class_legend(classes), ("dashed: ground truth, solid: prediction (score)", "")]


SPEC = DetectionTask()
