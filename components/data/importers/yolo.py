"""YOLO exports (Ultralytics / Roboflow "YOLOv5-11"): `data.yaml` with `names` (list or
{id: name}) and `train`/`val`/`test` image folders, one `labels/<image>.txt` per image
(`class cx cy w h`, normalised to 0..1). Image sizes come from the image headers."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from PIL import Image

from components.data import label_files
from components.data.importers.common import SPLIT_ALIASES, Item, refuse

NAME = "yolo"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def detect(root: Path) -> str | None:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (root / name).is_file():
            return f"YOLO {name}"
    return None


def _config(root: Path) -> tuple[dict, str]:
    name = next(n for n in ("data.yaml", "data.yml", "dataset.yaml") if (root / n).is_file())
    try:
        config = yaml.safe_load((root / name).read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        raise refuse(root / name, "YOLO data.yaml", f"not YAML: {exc}"[:300], "re-export data.yaml") from None
    if not isinstance(config, dict) or not isinstance(config.get("names"), list | dict) or not config["names"]:
        raise refuse(root / name, "YOLO data.yaml", "no 'names' list", "list the class names: names: [cat, dog]")
    return config, name


def _label_file(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
    return Path(*parts).with_suffix(".txt")


def read(root: Path) -> tuple[list[Item], list[str]]:
    config, config_name = _config(root)
    names = config["names"]
    classes = [str(n) for n in names] if isinstance(names, list) else [str(names[k]) for k in sorted(names)]
    ids = dict(enumerate(classes)) if isinstance(names, list) else {int(k): str(v) for k, v in names.items()}
    base = root / str(config.get("path") or ".") if not Path(str(config.get("path") or ".")).is_absolute() else root
    problems, items = [], []
    for key in ("train", "val", "test"):
        for folder in ([config[key]] if isinstance(config.get(key), str) else []):
            directory = (base / folder).resolve()
            if not directory.is_relative_to(root.resolve()) or not directory.is_dir():
                problems.append(label_files.Problem("YOLO folders", config_name, key, f"{folder!r} is no folder inside the dataset",
                                                    "point train/val/test at image folders under the dataset root"))
                continue
            for image in sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                rel = image.relative_to(root.resolve()).as_posix()
                with Image.open(image) as im:
                    width, height = im.size
                item = Item(rel, SPLIT_ALIASES[key], "", width, height)
                labels = _label_file(image)
                text, problem = label_files.decode_text(labels.read_bytes(), labels.name) if labels.is_file() else ("", None)
                if problem:
                    problems.append(problem)
                    continue
                for number, line in enumerate(text.splitlines(), start=1):
                    fields = line.split()
                    if not fields:
                        continue
                    where = f"{labels.relative_to(root.resolve())}"
                    try:
                        cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:5])
                        ok = len(fields) == 5 and all(math.isfinite(v) for v in (cx, cy, w, h))
                    except (ValueError, IndexError):
                        ok = False
                    if not ok:
                        problems.append(label_files.Problem("YOLO label rows", where, f"line {number}", f"{line.strip()[:60]!r} is not 'class cx cy w h'",
                                                            "write one box per line: class id and four numbers normalised to 0..1 (segments: export as YOLO detection)"))
                        continue
                    if cls not in ids:
                        problems.append(label_files.Problem("YOLO class ids", where, f"line {number}", f"class {cls} is not in names",
                                                            f"use ids 0..{len(classes) - 1} (data.yaml names)"))
                        continue
                    item.boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
                    item.labels.append(ids[cls])
                items.append(item)
    if problems:
        raise refuse(root, "YOLO export", label_files.report(problems, root), "fix the export as each line says")
    return items, classes
