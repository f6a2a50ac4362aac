"""Export a canonical dataset (the built-in shapes) as the tools would: COCO with RLE or
polygon masks (CVAT "COCO 1.0" style, one instances_<split>.json, images under images/), YOLO
(data.yaml, <split>/images, <split>/labels) and Pascal VOC (Annotations, JPEGImages,
ImageSets/Main, SegmentationClass palette PNGs). For the README's worked example and the
round-trip tests: `python -m components.data.importers.examples <canonical> <out>`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")


def read_coco_records(root: Path) -> list[dict]:
    """The canonical annotations/<split>.json as records (boxes XYXY), like the detection task."""
    records = []
    for split in SPLITS:
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for image in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            records.append({"path": image["file_name"], "split": split, "group": image.get("group", ""),
                            "width": image["width"], "height": image["height"],
                            "boxes": [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                            "labels": [names[a["category_id"]] for a in anns]})
    return records


def _records(root: Path) -> tuple[list[dict], list[str], dict[str, str]]:
    classes = json.loads((root / "dataset.json").read_text())["classes"]
    masks = {}
    if (root / "labels.csv").is_file():
        import csv

        masks = {r["path"]: r.get("mask", "") for r in csv.DictReader((root / "labels.csv").open())}
    return read_coco_records(root), classes, masks


def pixel_polygons(region: np.ndarray) -> list[list[float]]:
    """A boolean mask as COCO polygons along pixel edges, one rectangle per run of rows
    with the same horizontal runs: pycocotools renders them back to exactly these pixels
    (a free-hand polygon from a tool goes through the same renderer, coco.render)."""
    polygons, open_runs = [], {}  # (x1, x2) -> first row of the rectangle
    for y in range(region.shape[0] + 1):
        row = region[y] if y < region.shape[0] else np.zeros(region.shape[1], bool)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        runs = set(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
        for run in [r for r in open_runs if r not in runs]:
            (x1, x2), y1 = run, open_runs.pop(run)
            polygons.append([float(v) for v in (x1, y1, x2, y1, x2, y, x1, y)])
        for run in runs - open_runs.keys():
            open_runs[run] = y
    return polygons


def to_coco(root: Path, out: Path, polygons: bool = False) -> Path:
    """COCO with one RLE per object, or (`polygons`, CVAT's default for drawn shapes) polygons."""
    from faster_coco_eval.core import mask as coco_mask

    records, classes, masks = _records(root)
    for split in SPLITS:
        coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
        for number, r in enumerate((r for r in records if r["split"] == split), start=1):
            shutil.copy2(root / r["path"], (out / "images" / r["path"]).parent.mkdir(parents=True, exist_ok=True) or out / "images" / r["path"])
            coco["images"].append({"id": number, "file_name": r["path"], "width": r["width"], "height": r["height"], "group": r["group"]})
            mask = np.asarray(Image.open(root / masks[r["path"]])) if masks.get(r["path"]) else None
            for box, label in zip(r["boxes"], r["labels"], strict=True):
                x1, y1, x2, y2 = box
                ann = {"id": len(coco["annotations"]) + 1, "image_id": number, "category_id": classes.index(label) + 1,
                       "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                if mask is not None:  # this class's pixels inside the box: one RLE per object
                    region = np.zeros(mask.shape, np.uint8, order="F")
                    ys, xs = slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2)))
                    region[ys, xs] = mask[ys, xs] == classes.index(label) + 1
                    if polygons:
                        ann["segmentation"] = pixel_polygons(region.astype(bool))
                    else:
                        rle = coco_mask.encode(np.asfortranarray(region))
                        ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]}
                coco["annotations"].append(ann)
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return out


def to_yolo(root: Path, out: Path) -> Path:
    records, classes, _ = _records(root)
    for r in records:
        image = out / r["split"] / "images" / Path(r["path"]).name
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / r["path"], image)
        w, h = r["width"], r["height"]
        lines = [f"{classes.index(name)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}"
                 for b, name in zip(r["boxes"], r["labels"], strict=True)]
        label = out / r["split"] / "labels" / f"{image.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    (out / "data.yaml").write_text(json.dumps({"train": "train/images", "val": "val/images", "test": "test/images", "names": classes}))
    return out


def to_voc(root: Path, out: Path) -> Path:
    records, classes, masks = _records(root)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main", "SegmentationClass"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (768 - 12)
    for split in SPLITS:
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{Path(r['path']).stem}\n" for r in records if r["split"] == split))
    for r in records:
        stem, name = Path(r["path"]).stem, Path(r["path"]).name
        shutil.copy2(root / r["path"], out / "JPEGImages" / name)
        objects = "".join(f"<object><name>{escape(label)}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                          for b, label in zip(r["boxes"], r["labels"], strict=True))
        (out / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{escape(name)}</filename><size><width>{r['width']}</width><height>{r['height']}</height><depth>3</depth></size>{objects}</annotation>")
        if masks.get(r["path"]):
            mask = Image.open(root / masks[r["path"]]).convert("L").convert("P")
            mask.putpalette(palette)
            mask.save(out / "SegmentationClass" / f"{stem}.png")
    (out / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                      + "".join(f"{c}:{palette[3 * (i + 1)]},{palette[3 * (i + 1) + 1]},{palette[3 * (i + 1) + 2]}::\n" for i, c in enumerate(classes)))
    return out


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    for name, export in (("coco", to_coco), ("coco-polygons", lambda a, b: to_coco(a, b, polygons=True)),
                         ("yolo", to_yolo), ("voc", to_voc)):
        print(export(source, target / name))
