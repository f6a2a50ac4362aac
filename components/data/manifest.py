"""The manifests the data contract validates, computed in parallel and streamed to CSV.

`manifest.csv`, one row per image: path, split, group, labels (the task's annotation
summary), annotations (how many annotation rows), in_root, readable, error, format, mode,
channels, width, height (as displayed: after EXIF orientation), bytes, sha256, phash (the
perceptual hash the near-duplicate leakage rule compares across splits).

`annotations.csv`, one row per annotation (the TaskSpec's `annotation_rows`): a class label,
a box (XYXY pixels, area) or a mask (file, mode, size) and the distinct values in it, next
to the image's decoded size.

Records are inspected by a thread pool in bounded chunks and written as they finish, so
memory holds one chunk of rows, never the dataset's pixels.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import imagehash
from PIL import Image, UnidentifiedImageError

from components.data.images import ImageError, displayed_size, load_rgb
from components.data.safepath import ESCAPES, inside_root
from components.tasks.base import TaskSpec

COLUMNS = [
    "path", "split", "group", "labels", "annotations", "in_root", "readable", "error",
    "format", "mode", "channels", "width", "height", "bytes", "sha256", "phash",
]
ANNOTATION_COLUMNS = [
    "path", "split", "kind", "label", "value", "x1", "y1", "x2", "y2", "area",
    "image_readable", "image_width", "image_height",
    "file", "file_in_root", "file_readable", "file_error", "file_mode", "file_width", "file_height",
]
CHUNK = 256  # records in flight at once: bounds memory, keeps every worker busy


def annotations_path(manifest: Path) -> Path:
    return Path(manifest).with_name("annotations.csv")


def inspect_image(root: Path, rel_path: str, max_side: int | None = None, data: bytes | None = None) -> dict[str, Any]:
    """Check the size from the header, then decode fully (as training will: components/data/
    images.py), hash the bytes and the picture. `data`: the file's bytes when the caller
    already holds them (a shard's member, components/data/ray_data.py); the path is then
    checked as a name under `root` and not read. One decode path for both: from memory."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS[5:], "")
    path = inside_root(root, rel_path)
    if path is None:
        return {**row, "in_root": False, "readable": False, "error": ESCAPES}
    row["in_root"] = True
    try:
        data = path.read_bytes() if data is None else data
        row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        with Image.open(io.BytesIO(data)) as image:
            width, height = displayed_size(image)
            row.update(format=image.format or "", mode=image.mode, channels=len(image.getbands()), width=width, height=height)
            rgb = load_rgb(image, max_side=max_side)
        row.update(readable=True, phash=str(imagehash.phash(rgb)))
    except UnidentifiedImageError:  # PIL names the stream (a memory address): name the file instead
        row.update(readable=False, error=f"UnidentifiedImageError: cannot identify image file {rel_path!r}"[:200])
    except (OSError, ValueError, ImageError, Image.DecompressionBombError, SyntaxError) as exc:
        row.update(readable=False, error=f"{type(exc).__name__}: {exc}"[:200])
    return row


def inspect_record(root: Path, spec: TaskSpec, record: dict[str, Any], max_side: int | None = None,
                   image_bytes: bytes | None = None) -> tuple[dict, list[dict]]:
    """(manifest row, annotation rows) of one record (`image_bytes`: see inspect_image)."""
    image = inspect_image(root, record["path"], max_side, image_bytes)
    width, height = (image["width"], image["height"]) if image["readable"] else (None, None)
    key = {"path": record["path"], "split": record["split"]}
    annotations = [
        {**key, "image_readable": image["readable"], "image_width": width, "image_height": height, **row}
        for row in spec.annotation_rows(record, root, width, height)
    ]
    counted = sum(row["kind"] != "mask_value" for row in annotations)  # values detail a mask
    row = {**key, "group": record["group"], "labels": spec.label_summary(record), "annotations": counted, **image}
    return row, annotations


def iter_manifest(root: Path, spec: TaskSpec, workers: int = 8, max_side: int | None = None) -> Iterator[tuple[dict, list[dict]]]:
    records = spec.read_records(root)
    inspect = partial(inspect_record, root, spec, max_side=max_side)
    with ThreadPoolExecutor(workers) as pool:  # PIL and hashlib release the GIL
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            yield from pool.map(inspect, chunk)


def write_manifest(root: Path, spec: TaskSpec, out: Path, workers: int = 8, max_side: int | None = None) -> int:
    """Write `out` (manifest.csv) and annotations.csv beside it; returns the image count."""
    count = 0
    with Path(out).open("w", newline="") as f, annotations_path(out).open("w", newline="") as g:
        images, annotations = csv.DictWriter(f, COLUMNS), csv.DictWriter(g, ANNOTATION_COLUMNS)
        images.writeheader()
        annotations.writeheader()
        for row, rows in iter_manifest(root, spec, workers, max_side):
            images.writerow(row)
            annotations.writerows(rows)
            count += 1
    return count
