"""COCO JSON exports (CVAT "COCO 1.0", Label Studio, Roboflow "COCO"): boxes, and polygons or
RLE rendered to class-index masks with faster-coco-eval's mask API (the runtime twin of
pycocotools' `frPyObjects`/`decode`; the tests check it against pycocotools itself).

Found as `annotations/*.json`, `*.json` at the root or `<split>/_annotations.coco.json`; a
file's split comes from its name or folder (instances_train2017.json, valid/...), else the
seeded split. `file_name` is looked up next to the JSON, under the root and under images/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.data import label_files
from components.data.importers.common import SPLIT_ALIASES, Item, refuse

NAME = "coco"


def files(root: Path) -> list[Path]:
    candidates = [*root.glob("annotations/*.json"), *root.glob("*.json"), *root.glob("*/_annotations.coco.json")]
    found = []
    for path in sorted(set(candidates)):
        if path.name == "dataset.json":
            continue
        try:
            head = json.loads(path.read_text(encoding="utf-8-sig"))
        except (ValueError, OSError):
            continue
        if isinstance(head, dict) and "images" in head and "categories" in head:
            found.append(path)
    return found


def detect(root: Path) -> str | None:
    found = files(root)
    return f"COCO JSON {[str(p.relative_to(root)) for p in found]}" if found else None


def split_of(path: Path, root: Path) -> str | None:
    words = [path.stem.lower(), path.parent.name.lower()]
    for word in words:
        for part in word.replace("-", "_").split("_"):
            stripped = part.rstrip("0123456789")
            if stripped in SPLIT_ALIASES:
                return SPLIT_ALIASES[stripped]
    return None


def _resolve(root: Path, json_path: Path, file_name: str) -> str | None:
    for base in (json_path.parent, root, root / "images", json_path.parent / "images"):
        candidate = base / file_name
        if candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
            return candidate.resolve().relative_to(root.resolve()).as_posix()
    return None


def render(segmentation, height: int, width: int) -> np.ndarray:
    """A boolean [H, W] mask of a COCO polygon list or RLE (compressed or not)."""
    from faster_coco_eval.core import mask as coco_mask

    if isinstance(segmentation, list):  # polygons
        rles = coco_mask.frPyObjects([p for p in segmentation if len(p) >= 6], height, width)
        rle = coco_mask.merge(rles) if rles else None
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return np.zeros((height, width), bool) if rle is None else coco_mask.decode(rle).astype(bool)


def read(root: Path) -> tuple[list[Item], list[str]]:
    problems, items, classes = [], [], []
    for path in files(root):
        name = path.relative_to(root).as_posix()
        problems += label_files.check_coco(path, name)
        if problems:
            continue
        coco = json.loads(path.read_text(encoding="utf-8-sig"))
        names = {c["id"]: c["name"] for c in coco["categories"]}
        classes += [n for n in names.values() if n not in classes]
        by_image: dict = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        split = split_of(path, root)
        for i, image in enumerate(coco["images"]):
            rel = _resolve(root, path, image["file_name"])
            if rel is None:
                problems.append(label_files.Problem("images exist", name, f"images[{i}]", f"file_name {image['file_name']!r} not found",
                                                    "export the images with the annotations (next to the JSON or under images/)"))
                continue
            width, height = image.get("width"), image.get("height")
            item = Item(rel, split, str(image.get("group", "")), width, height)
            anns = by_image.get(image["id"], [])
            segmented = any(a.get("segmentation") for a in anns)
            if segmented and isinstance(width, int) and isinstance(height, int):
                item.mask = np.zeros((height, width), np.uint8)
            for ann in anns:
                x, y, w, h = ann["bbox"]
                if ann.get("iscrowd"):
                    if item.mask is not None and ann.get("segmentation"):
                        item.mask[render(ann["segmentation"], height, width)] = 255  # crowd regions are ignored
                    continue
                item.boxes.append([x, y, x + w, y + h])
                item.labels.append(names[ann["category_id"]])
                if item.mask is not None and ann.get("segmentation"):
                    item.mask[render(ann["segmentation"], height, width)] = classes.index(names[ann["category_id"]]) + 1
            items.append(item)
    if problems:
        raise refuse(root, "COCO export", label_files.report(problems, root), "fix the export as each line says")
    return items, classes
