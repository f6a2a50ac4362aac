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
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

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


class DetectionData:
    """Reading and target building for detection; the TaskSpec mixes this in."""

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
        boxes = torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size),
            "labels": torch.tensor([class_to_idx[name] for name in record["labels"]], dtype=torch.int64),
        }

    def target_transforms(self) -> list[Any]:
        return [v2.SanitizeBoundingBoxes(min_size=1)]  # drop boxes an augmentation cut away

    def collate(self, batch):
        images, targets = zip(*batch, strict=True)
        return torch.stack(images), list(targets)
