"""The per-image manifest: one row per image, the table the data contract validates.

Columns: path, split, group, labels (the task's annotation summary), readable, error,
format, mode, channels, width, height, bytes, sha256. Rows are computed in a thread pool
and written as they come, so a large dataset never sits in memory as images.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from components.tasks.base import TaskSpec

COLUMNS = [
    "path", "split", "group", "labels", "readable", "error",
    "format", "mode", "channels", "width", "height", "bytes", "sha256",
]


def inspect_image(root: Path, rel_path: str) -> dict[str, Any]:
    """Decode one image fully (not only its header) and hash its bytes."""
    path = root / rel_path
    row: dict[str, Any] = dict.fromkeys(COLUMNS[4:], "")
    try:
        data = path.read_bytes()
        row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        with Image.open(path) as image:
            image.load()  # truncated or corrupt files fail here, not at training time
            row.update(
                format=image.format or "", mode=image.mode, channels=len(image.getbands()),
                width=image.width, height=image.height,
            )
        row.update(readable=True)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        row.update(readable=False, error=f"{type(exc).__name__}: {exc}"[:200])
    return row


def iter_manifest(root: Path, spec: TaskSpec, workers: int = 8) -> Iterator[dict[str, Any]]:
    records = spec.read_records(root)
    with ThreadPoolExecutor(workers) as pool:
        inspected = pool.map(lambda r: inspect_image(root, r["path"]), records, chunksize=64)
        for record, image in zip(records, inspected, strict=True):
            yield {
                "path": record["path"], "split": record["split"], "group": record["group"],
                "labels": spec.label_summary(record), **image,
            }


def write_manifest(root: Path, spec: TaskSpec, out: Path) -> int:
    """Write `out` (CSV) for the dataset at `root`; returns the number of rows."""
    count = 0
    with Path(out).open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for row in iter_manifest(root, spec):
            writer.writerow(row)
            count += 1
    return count
