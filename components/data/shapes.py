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
import itertools
import json
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from components.data import near_duplicates

CLASSES = ("circle", "square", "triangle")
GROUPS = ("day", "night")
SUPERSAMPLE = 4  # draw at 4x and downsample, for anti-aliased edges
CHUNK = 512  # scenes per pool task: amortises the hand-off to a worker process
PROCESS_MIN_IMAGES = 5000  # below this, spawning worker processes costs more than it saves


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


def _coco_image(index: int, group: str, size: int) -> dict:
    return {"id": index + 1, "file_name": f"images/{_name(index)}", "width": size, "height": size, "group": group}


def _name(index: int) -> str:
    return f"{index:05d}.png"


def _write_chunk(out_dir: Path, cfg: ShapesConfig, indices: range) -> list[tuple[int, str]]:
    """Render and write scenes `indices`; returns (phash, spool line) per scene: the line is
    what labels.csv and the COCO files need, [label, group, objects] as JSON."""
    done = []
    for index in indices:
        scene = render_scene(cfg, index)
        name = _name(index)
        scene.image.save(out_dir / "images" / name)
        Image.fromarray(scene.mask).save(out_dir / "masks" / name)
        largest = max(scene.objects, key=lambda o: o["area"])["label"] if scene.objects else "none"
        done.append((near_duplicates.phash(scene.image), json.dumps([largest, scene.group, scene.objects])))
    return done


def _render_all(out_dir: Path, cfg: ShapesConfig, workers: int) -> Iterator[tuple[int, str]]:
    """Every scene's (phash, spool line), in index order, with a bounded number of chunks in
    flight. Drawing is mostly Python under the GIL (threads ran ~1 core), so a large dataset
    renders in worker processes (spawned: the caller may hold threads; so a script that
    calls generate for that many needs the `if __name__ == "__main__":` guard, as the CLI
    has); a small one in threads, where starting processes would cost more than it saves."""
    n = cfg.num_images
    if n >= PROCESS_MIN_IMAGES and (cores := min(workers, len(os.sched_getaffinity(0)))) > 1:
        pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
    else:
        pool, cores = ThreadPoolExecutor(workers), workers  # PIL releases the GIL while encoding PNGs
    chunks = (range(lo, min(lo + CHUNK, n)) for lo in range(0, n, CHUNK))
    with pool:
        pending = deque(pool.submit(_write_chunk, out_dir, cfg, c) for c in itertools.islice(chunks, 2 * cores))
        while pending:
            done = pending.popleft().result()
            for chunk in itertools.islice(chunks, 1):
                pending.append(pool.submit(_write_chunk, out_dir, cfg, chunk))
            yield from done


def _write_coco(out_dir: Path, spool, splits: list[str], size: int) -> None:
    """annotations/<split>.json for the three splits, streamed from the spool (two passes:
    images, then annotations), the same bytes as json.dumps of the whole dict."""
    (out_dir / "annotations").mkdir(exist_ok=True)
    names = ("train", "val", "test")
    files = {s: (out_dir / "annotations" / f"{s}.json").open("w") for s in names}
    try:
        first = dict.fromkeys(names, True)
        for f in files.values():
            f.write('{"images": [')
        spool.seek(0)
        for index, (line, split) in enumerate(zip(spool, splits, strict=True)):
            _, group, _ = json.loads(line)
            files[split].write(("" if first[split] else ", ") + json.dumps(_coco_image(index, group, size)))
            first[split] = False
        ids = dict.fromkeys(names, 0)
        for f in files.values():
            f.write('], "annotations": [')
        spool.seek(0)
        for index, (line, split) in enumerate(zip(spool, splits, strict=True)):
            for obj in json.loads(line)[2]:
                ids[split] += 1
                annotation = {"id": ids[split], "image_id": index + 1, "category_id": CLASSES.index(obj["label"]) + 1,
                              "bbox": obj["bbox"], "area": obj["area"], "iscrowd": 0}
                files[split].write(("" if ids[split] == 1 else ", ") + json.dumps(annotation))
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
        for f in files.values():
            f.write('], "categories": ' + json.dumps(categories) + "}")
    finally:
        for f in files.values():
            f.close()


def generate(out_dir: Path, cfg: ShapesConfig, workers: int = 4) -> Path:
    """Write the shapes dataset to `out_dir` in all three formats; returns out_dir.

    Memory is bounded (issue 18: 10^6 images): each scene's labels and boxes are spooled to
    an unnamed temporary file as they are rendered, only the phashes stay in memory (for
    `keep_together`), and labels.csv and the COCO files are streamed from the spool."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    with tempfile.TemporaryFile("w+", dir=out_dir) as spool:
        hashes = []
        for phash, line in _render_all(out_dir, cfg, workers):
            hashes.append(phash)
            spool.write(line + "\n")
        # independent seeded draws at 32 px sometimes coincide (37 pairs within 2 bits at 6,000):
        # such a pair is one picture to the contract's leakage rule, so it goes in one split
        splits, _ = near_duplicates.keep_together(assign_splits(cfg.num_images, cfg.splits, cfg.seed),
                                                  hashes, cfg.near_duplicate_distance)
        del hashes
        with (out_dir / "labels.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "split", "group", "mask"])
            spool.seek(0)
            for index, (line, split) in enumerate(zip(spool, splits, strict=True)):
                label, group, _ = json.loads(line)
                writer.writerow([f"images/{_name(index)}", label, split, group, f"masks/{_name(index)}"])
        _write_coco(out_dir, spool, splits, cfg.image_size)
    meta = {"name": "shapes", "classes": list(CLASSES), "groups": list(GROUPS), "config": cfg.__dict__}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out_dir
