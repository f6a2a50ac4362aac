"""The built-in **shapes** dataset: procedural scenes, deterministic from a seed.

Each scene is a background with 1..k shapes (circle, square, triangle). One scene list is
written in all three canonical formats at once:

    images/00000.png              RGB image
    masks/00000.png               class-index mask (0 = background, 1.. = shape classes)
    labels.csv                    path, label (largest shape), split, group, mask
    annotations/<split>.json      COCO detection annotations (group in each image entry)
    dataset.json                  classes, groups, seed, generator settings

Every image has a sensitive attribute `group`: "day" (bright, high contrast) or "night"
(dark, low contrast, noisy). Night is under-represented (`minority_fraction`) and harder,
so fairness gaps are real and measurable.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from components.data import near_duplicates

CLASSES = ("circle", "square", "triangle")
GROUPS = ("day", "night")
SUPERSAMPLE = 4  # draw at 4x and downsample, for anti-aliased edges


@dataclass(frozen=True)
class ShapesConfig:
    num_images: int = 2000
    image_size: int = 32
    objects_per_image: tuple[int, int] = (1, 1)
    minority_fraction: float = 0.2
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 42
    #: phash bits within which two scenes are one picture, kept in one split (None: off)
    near_duplicate_distance: int | None = 2


@dataclass
class Scene:
    image: Image.Image  # RGB, image_size x image_size
    mask: np.ndarray  # uint8 [H, W], 0 = background, i + 1 = CLASSES[i]
    objects: list[dict]  # {"label": str, "bbox": [x, y, w, h]} from the visible pixels
    group: str


def _colour(rng: np.random.Generator, lo: float, hi: float) -> tuple[int, int, int]:
    """A random saturated colour whose brightness lies in [lo, hi] (0..1)."""
    base = rng.uniform(0.3, 1.0, size=3)
    base = base / base.max() * rng.uniform(lo, hi)
    return tuple(int(c * 255) for c in base)


def _draw_shape(draw: ImageDraw.ImageDraw, label: str, cx: float, cy: float, r: float, angle: float, fill) -> None:
    if label == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return
    corners = 4 if label == "square" else 3
    # a square of circumradius r has side r*sqrt(2); scale triangles up to similar area
    radius = r * (1.0 if corners == 4 else 1.25)
    points = [
        (cx + radius * np.cos(angle + 2 * np.pi * k / corners), cy + radius * np.sin(angle + 2 * np.pi * k / corners))
        for k in range(corners)
    ]
    draw.polygon(points, fill=fill)


def render_scene(cfg: ShapesConfig, index: int) -> Scene:
    """Render scene `index`; depends only on (cfg, index), so scenes render in any order."""
    rng = np.random.default_rng([cfg.seed, index])
    night = rng.random() < cfg.minority_fraction
    size, big = cfg.image_size, cfg.image_size * SUPERSAMPLE
    bg_lo, bg_hi, fg_lo, fg_hi, noise = (0.02, 0.2, 0.15, 0.35, 14.0) if night else (0.5, 1.0, 0.1, 1.0, 4.0)

    canvas = Image.new("RGB", (big, big), _colour(rng, bg_lo, bg_hi))
    mask = Image.new("L", (big, big), 0)
    draw, mask_draw = ImageDraw.Draw(canvas), ImageDraw.Draw(mask)
    # a soft gradient stripe so backgrounds are not flat
    draw.rectangle([0, 0, big, int(big * rng.uniform(0.2, 0.6))], fill=_colour(rng, bg_lo, bg_hi))
    background = np.array(canvas.getpixel((big - 1, big - 1)))

    count = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    labels = []
    for instance in range(count):
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        r = big * rng.uniform(0.18, 0.32) / max(1.0, count**0.5)
        cx, cy = rng.uniform(r, big - r, size=2)
        fill = _colour(rng, fg_lo, fg_hi)
        while np.abs(np.array(fill) - background).sum() < 60 and not night:
            fill = _colour(rng, fg_lo, fg_hi)
        angle = rng.uniform(0, 2 * np.pi)
        _draw_shape(draw, label, cx, cy, r, angle, fill)
        _draw_shape(mask_draw, label, cx, cy, r, angle, instance + 1)  # instance ids while drawing
        labels.append(label)

    image = np.asarray(canvas.resize((size, size), Image.LANCZOS), dtype=np.float32)
    image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    instances = np.asarray(mask.resize((size, size), Image.NEAREST))
    class_mask = np.zeros_like(instances)
    objects = []
    for instance, label in enumerate(labels, start=1):
        ys, xs = np.nonzero(instances == instance)
        if len(xs) < 4:  # fully occluded or sub-pixel: not annotated anywhere
            continue
        class_mask[instances == instance] = CLASSES.index(label) + 1
        x0, y0 = int(xs.min()), int(ys.min())
        objects.append({"label": label, "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0], "area": len(xs)})
    return Scene(Image.fromarray(image), class_mask, objects, GROUPS[int(night)])


def assign_splits(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Deterministic random split of n items into train/val/test by fractions."""
    order = np.random.default_rng([seed, 1_000_003]).permutation(n)
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    splits = np.empty(n, dtype=object)
    splits[order[:n_train]] = "train"
    splits[order[n_train : n_train + n_val]] = "val"
    splits[order[n_train + n_val :]] = "test"
    return list(splits)


def _coco(split: str, rows: list[dict]) -> dict:
    images, annotations = [], []
    for row in rows:
        if row["split"] != split:
            continue
        image_id = row["id"]
        images.append({"id": image_id, "file_name": row["path"], "width": row["size"], "height": row["size"], "group": row["group"]})
        for obj in row["objects"]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CLASSES.index(obj["label"]) + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def generate(out_dir: Path, cfg: ShapesConfig, workers: int = 4) -> Path:
    """Write the shapes dataset to `out_dir` in all three formats; returns out_dir."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    def write(index: int) -> dict:
        scene = render_scene(cfg, index)
        name = f"{index:05d}.png"
        scene.image.save(out_dir / "images" / name)
        Image.fromarray(scene.mask).save(out_dir / "masks" / name)
        largest = max(scene.objects, key=lambda o: o["area"])["label"] if scene.objects else "none"
        return {
            "id": index + 1, "path": f"images/{name}", "mask": f"masks/{name}", "label": largest,
            "group": scene.group, "objects": scene.objects, "size": cfg.image_size, "phash": near_duplicates.phash(scene.image),
        }

    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while encoding PNGs
        rows = list(pool.map(write, range(cfg.num_images)))
    # independent seeded draws at 32 px sometimes coincide (37 pairs within 2 bits at 6,000):
    # such a pair is one picture to the contract's leakage rule, so it goes in one split
    splits, _ = near_duplicates.keep_together(assign_splits(cfg.num_images, cfg.splits, cfg.seed),
                                              [r["phash"] for r in rows], cfg.near_duplicate_distance)
    for row, split in zip(rows, splits, strict=True):
        row["split"] = split

    with (out_dir / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "split", "group", "mask"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "annotations").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (out_dir / "annotations" / f"{split}.json").write_text(json.dumps(_coco(split, rows)))
    meta = {"name": "shapes", "classes": list(CLASSES), "groups": list(GROUPS), "config": cfg.__dict__}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out_dir
