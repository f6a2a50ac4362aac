"""Pascal VOC exports (CVAT "PASCAL VOC 1.1" / "Segmentation mask 1.1", LabelImg):
`Annotations/*.xml` boxes, `JPEGImages/`, splits from `ImageSets/Main/{train,val,test}.txt`,
and `SegmentationClass/*.png` masks, either palette PNGs (the index is the class) or colour
PNGs mapped by `labelmap.txt` (`name:r,g,b::`, CVAT's), see colour_masks.py."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from components.data import label_files
from components.data.importers.colour_masks import class_mask, read_labelmap
from components.data.importers.common import Item, refuse

NAME = "voc"


def detect(root: Path) -> str | None:
    if (root / "Annotations").is_dir() and any((root / "Annotations").glob("*.xml")):
        return "Pascal VOC Annotations/*.xml"
    if (root / "SegmentationClass").is_dir() and (root / "JPEGImages").is_dir():
        return "Pascal VOC SegmentationClass/"
    return None


def _splits(root: Path) -> dict[str, str]:
    found = {}
    for folder in ("Main", "Segmentation"):
        for split in ("train", "val", "test"):
            path = root / "ImageSets" / folder / f"{split}.txt"
            if path.is_file():
                text, _ = label_files.decode_text(path.read_bytes(), path.name)
                found.update({line.split()[0]: split for line in (text or "").splitlines() if line.split()})
    return found


def _number(node: ET.Element, tag: str) -> float:
    value = float(node.findtext(tag, "nan"))
    if not math.isfinite(value):
        raise ValueError(f"<{tag}> missing or not a number")
    return value


def read(root: Path) -> tuple[list[Item], list[str]]:
    splits, problems, items, classes = _splits(root), [], {}, []
    for xml in sorted((root / "Annotations").glob("*.xml")):
        where = xml.relative_to(root).as_posix()
        try:
            tree = ET.parse(xml).getroot()
            name = tree.findtext("filename") or f"{xml.stem}.jpg"
            image = root / "JPEGImages" / name
            item = Item(image.relative_to(root).as_posix(), splits.get(xml.stem), "",
                        int(_number(tree.find("size"), "width")), int(_number(tree.find("size"), "height")))
            for i, obj in enumerate(tree.findall("object")):
                box, label = obj.find("bndbox"), (obj.findtext("name") or "").strip()
                if box is None or not label:
                    raise ValueError(f"object {i} has no <name> or <bndbox>")
                item.boxes.append([_number(box, t) for t in ("xmin", "ymin", "xmax", "ymax")])
                item.labels.append(label)
                classes += [label] if label not in classes else []
        except (ET.ParseError, ValueError, TypeError, AttributeError) as exc:
            problems.append(label_files.Problem("VOC XML", where, "-", str(exc)[:120], "re-export the annotation (VOC: <size>, <object><name>, <bndbox>)"))
            continue
        if not image.is_file():
            problems.append(label_files.Problem("images exist", where, "filename", f"{name} not in JPEGImages/", "export the images with the annotations"))
            continue
        items[xml.stem] = item
    masks = root / "SegmentationClass"
    if masks.is_dir():
        labelmap = read_labelmap(root / "labelmap.txt") if (root / "labelmap.txt").is_file() else None
        if labelmap is not None:
            classes = [*labelmap][1:] + [c for c in classes if c not in labelmap]  # labelmap order, background first
        for png in sorted(masks.glob("*.png")):
            item = items.get(png.stem)
            if item is None:
                image = next((p for p in (root / "JPEGImages").glob(f"{png.stem}.*")), None)
                if image is None:
                    problems.append(label_files.Problem("images exist", png.relative_to(root).as_posix(), "-", "no image in JPEGImages/", "export the images with the masks"))
                    continue
                with Image.open(image) as im:
                    item = items[png.stem] = Item(image.relative_to(root).as_posix(), splits.get(png.stem), "", *im.size)
            with Image.open(png) as mask:
                if mask.mode == "P" or labelmap is None:
                    item.mask = np.asarray(mask.convert("L") if mask.mode not in ("P", "L") else mask).copy()
                else:
                    item.mask = class_mask(mask, labelmap, png.relative_to(root).as_posix())
        if labelmap is None and not classes:
            raise refuse(root, "class list declared", "palette masks without labelmap.txt: the class names are unknown",
                         'add labelmap.txt (CVAT: "name:r,g,b::" per line, background first) or dataset.json {"classes": [...]}')
    if problems:
        raise refuse(root, "VOC export", label_files.report(problems, root), "fix the export as each line says")
    return list(items.values()), classes
