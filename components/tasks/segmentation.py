"""Semantic segmentation: one class per pixel.

On disk: `images/` + `masks/` PNGs of class indices (0 = background, 255 = ignore) +
`labels.csv` (path, split, group, mask); classes in dataset.json (without background).
Record: {"path", "split", "group", "mask"}. Target: tv_tensors.Mask int64 [H, W].
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from components.data.safepath import ESCAPES, inside_root

IGNORE_INDEX = 255


class SegmentationData:
    """Reading and target building for segmentation; the TaskSpec mixes this in."""

    def read_records(self, root: Path) -> list[dict[str, Any]]:
        with (root / "labels.csv").open(newline="") as f:
            return [
                {"path": r["path"], "split": r["split"], "group": r.get("group") or "", "mask": r["mask"]}
                for r in csv.DictReader(f)
            ]

    def record_classes(self, record: dict[str, Any]) -> list[str]:
        return []  # per-pixel classes are read from the mask by the data contract, not here

    def class_names(self, declared: list[str]) -> list[str]:
        return ["background", *declared]

    def annotation_rows(self, record, root, width, height) -> list[dict[str, Any]]:
        """One "mask" row (file, PIL mode, size) and one "mask_value" row per distinct value
        in the mask; the value indexes class_names() (0 = background) or is IGNORE_INDEX."""
        row: dict[str, Any] = {"kind": "mask", "file": record["mask"], "file_in_root": False, "file_readable": False}
        path = inside_root(root, record["mask"])
        if path is None:
            return [{**row, "file_error": ESCAPES}]
        try:
            with Image.open(path) as mask:
                values = np.unique(np.asarray(mask))  # decodes the whole mask: truncation fails here
                row.update(file_mode=mask.mode, file_width=mask.width, file_height=mask.height)
        except (OSError, ValueError) as exc:
            return [{**row, "file_in_root": True, "file_error": f"{type(exc).__name__}: {exc}"[:200]}]
        row.update(file_in_root=True, file_readable=True)
        return [row, *({"kind": "mask_value", "value": int(v)} for v in values)]

    def load_target(self, record, root, size, class_to_idx) -> tv_tensors.Mask:
        with Image.open(root / record["mask"]) as mask:
            return tv_tensors.Mask(torch.from_numpy(np.array(mask, dtype=np.int64)))

    def collate(self, batch):
        images, masks = zip(*batch, strict=True)
        return torch.stack(images), torch.stack([torch.as_tensor(m) for m in masks])
