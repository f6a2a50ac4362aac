"""What every importer shares: the item it produces, the canonical layout it writes, and
the seeded split for exports without one.

An importer turns an export into `Item`s (one per image: its path under the export root,
split or None, group, boxes XYXY in pixels with class names, and optionally a class-index
mask); `write_canonical` writes the layout the TaskSpecs read: `annotations/<split>.json`
(COCO, detection), `labels.csv` (path, label, split, group, mask: classification uses the
first box's class, segmentation the mask) and `dataset.json` (classes). Images are
hard-linked, not copied, when the export is on the same file system.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from components.data import near_duplicates
from components.errors import DataContractError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


@dataclass
class Item:
    path: str  # relative to the export root
    split: str | None = None
    group: str = ""
    width: int | None = None
    height: int | None = None
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None  # class indices, 0 = background (classes start at 1)
    label: str | None = None  # one class for the image (ImageFolder)


def refuse(where: Path | str, rule: str, message: str, fix: str) -> DataContractError:
    return DataContractError(f"Data contract FAILED for {where}: {message} (rule: {rule})\n    fix: {fix}")


def link(source: Path, target: Path) -> None:
    """Hard link (no second copy on disk); copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _hash(root: Path, item: Item) -> int:
    import hashlib

    from components.data.images import load_rgb

    try:  # the manifest's perceptual hash (validate compares it across splits)
        return near_duplicates.phash(load_rgb(root / item.path))
    except Exception:  # noqa: BLE001  (an unreadable image is the contract's to report; hash its bytes)
        return int(hashlib.sha256((root / item.path).read_bytes()).hexdigest()[:16], 16)


def assign_splits(root: Path, items: list[Item], fractions: tuple[float, float, float], seed: int,
                  near_distance: int = 2) -> None:
    """Give every item without a split one: seeded, stratified by (first class, group), with
    each cluster of near-duplicates (near_duplicates.clusters) assigned whole, so the same
    picture never lands in two splits. A cluster that holds an item the export already put
    in a split goes there. In each stratum the clusters are shuffled and dealt in order
    until train, then val, hold their fraction of the stratum's images; the first cluster
    of every stratum goes to train, so every class and group is trained on."""
    if all(i.split is not None for i in items):
        return
    clusters = [[items[k] for k in members]
                for members in near_duplicates.clusters([_hash(root, i) for i in items], near_distance)]
    strata: dict[tuple[str, str], list[list[Item]]] = {}
    for members in clusters:
        fixed = next((m.split for m in members if m.split is not None), None)
        if fixed is not None:
            for member in members:
                member.split = member.split or fixed
            continue
        first = members[0]
        strata.setdefault((first.label or (first.labels[0] if first.labels else ""), first.group), []).append(members)
    rng = random.Random(seed)
    for key in sorted(strata):
        groups = strata[key]
        rng.shuffle(groups)
        total, done = sum(len(g) for g in groups), 0
        for members in groups:
            share = done / total
            split = "train" if share < fractions[0] else "val" if share < fractions[0] + fractions[1] else "test"
            for member in members:
                member.split = split
            done += len(members)


def write_canonical(source: Path, out: Path, items: list[Item], classes: list[str]) -> None:
    """The canonical layout under `out` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    index = {name: i + 1 for i, name in enumerate(classes)}
    rows, cocos = [], {s: {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in index.items()]} for s in SPLITS}
    for number, item in enumerate(items, start=1):
        link(source / item.path, out / item.path)
        mask_path = ""
        if item.mask is not None:
            mask_path = f"masks/{Path(item.path).with_suffix('.png').as_posix()}"
            (out / mask_path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(item.mask.astype(np.uint8), "L").save(out / mask_path)
        label = item.label or (item.labels[0] if item.labels else "")
        rows.append({"path": item.path, "label": label, "split": item.split, "group": item.group, "mask": mask_path})
        coco = cocos[item.split]
        coco["images"].append({"id": number, "file_name": item.path, "width": item.width, "height": item.height, "group": item.group})
        for (x1, y1, x2, y2), name in zip(item.boxes, item.labels, strict=True):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": number, "category_id": index[name],
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (out / "annotations").mkdir(exist_ok=True)
    for split, coco in cocos.items():
        (out / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    with (out / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "split", "group", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "dataset.json").write_text(json.dumps({"classes": classes}))
