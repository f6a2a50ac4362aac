"""Importers: annotation-tool exports -> the canonical layout (common.py).

`data.format: auto` asks each format's `detect(root)` in FORMATS order and says what it
found; a layout none recognises is an error listing what was looked for.
"""

from __future__ import annotations

from pathlib import Path

from components.data.importers import classfolders, coco, voc, yolo
from components.data.importers.common import assign_splits, write_canonical
from components.errors import DataContractError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LOOKED_FOR = {
    "canonical": "labels.csv or annotations/<train|val|test>.json (the README's canonical layout)",
    "coco": "COCO JSON (annotations/*.json, *.json, <split>/_annotations.coco.json with images + categories)",
    "yolo": "YOLO data.yaml with names and train/val/test folders, labels/*.txt",
    "voc": "Pascal VOC Annotations/*.xml or SegmentationClass/ + JPEGImages/",
    "imagefolder": "<split>/<class>/<image> (ImageFolder; after YOLO: a YOLO tree looks like one)",
    "classfolders": "<class>/<image> for two or more classes, no splits (a seeded split is made)",
}
IMPORTERS = {"coco": coco, "yolo": yolo, "voc": voc, "classfolders": classfolders}
FORMATS = list(LOOKED_FOR)


def _canonical(root: Path) -> str | None:
    if (root / "labels.csv").is_file():
        return "canonical labels.csv"
    if any((root / "annotations" / f"{s}.json").is_file() for s in ("train", "val", "test")):
        return "canonical annotations/<split>.json"
    return None


def _imagefolder(root: Path) -> str | None:
    splits = [d.name for d in root.iterdir() if d.is_dir() and d.name in ("train", "val", "test")]
    if splits and any(p.suffix.lower() in IMAGE_SUFFIXES for s in splits for p in (root / s).glob("*/*")):
        return f"ImageFolder splits {sorted(splits)}"
    return None


DETECTORS = {"canonical": _canonical, "coco": coco.detect, "yolo": yolo.detect, "voc": voc.detect, "imagefolder": _imagefolder,
             "classfolders": classfolders.detect}


def detect(root: Path) -> tuple[str, str]:
    """(format, what was found) of the dataset at `root`."""
    for name, found in ((n, DETECTORS[n](root)) for n in FORMATS):
        if found:
            return name, found
    looked = "\n".join(f"      {n}: {d}" for n, d in LOOKED_FOR.items())
    raise DataContractError(f"{root}: no known dataset layout (rule: data.format auto). Looked for:\n{looked}\n"
                            "    fix: export in one of these formats, or set data.format")


def import_dataset(fmt: str, source: Path, out: Path, fractions: tuple[float, float, float], seed: int,
                   near_distance: int = 2) -> int:
    """Read an export of format `fmt` and write the canonical layout to `out` (images hard
    linked); returns the image count."""
    items, classes = IMPORTERS[fmt].read(source)
    if not items:
        raise DataContractError(f"{source}: the {fmt} export lists no images (rule: enough images)\n"
                                "    fix: export the images with the annotations")
    assign_splits(source, items, fractions, seed, near_distance)
    write_canonical(source, out, items, classes)
    return len(items)
