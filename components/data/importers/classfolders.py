"""Class folders without splits: `<class>/<image>` (a folder per class, as a photo tool or a
scrape leaves them). Every image gets its class from its folder and no split, so the
seeded, near-duplicate-aware split (common.assign_splits) places it. Needs two or more
class folders: one folder of pictures is no labelled dataset."""

from __future__ import annotations

from pathlib import Path

from components.data.importers.common import SPLIT_ALIASES, Item

NAME = "classfolders"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
#: folders of the other layouts: a canonical tree that lost labels.csv (images/, masks/) is
#: an unknown layout, not two classes named "images" and "masks"
LAYOUT_FOLDERS = {"images", "masks", "labels", "annotations", "jpegimages", "segmentationclass", "imagesets"}


def _classes(root: Path) -> dict[str, list[Path]]:
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not folders or any(d.name.lower() in SPLIT_ALIASES or d.name.lower() in LAYOUT_FOLDERS for d in folders):
        return {}
    found = {d.name: sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) for d in folders}
    return {name: images for name, images in found.items() if images}


def detect(root: Path) -> str | None:
    classes = _classes(root)
    if len(classes) >= 2:
        return f"class folders without splits ({len(classes)} classes)"
    return None


def read(root: Path) -> tuple[list[Item], list[str]]:
    classes = _classes(root)
    items = [Item(str(p.relative_to(root)), label=name) for name, images in classes.items() for p in images]
    return items, sorted(classes)
