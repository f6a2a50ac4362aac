"""The built-in **digits** dataset: scikit-learn's bundled real 8x8 handwritten digits
(1,797 images, no download), exported as a classification dataset (`labels.csv` + PNGs).

It has no sensitive attribute: `group` is empty and fairness reports say so.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from components.data import near_duplicates

CLASSES = tuple(str(d) for d in range(10))


def export(out_dir: Path, splits: tuple[float, float, float], seed: int, near_duplicate_distance: int | None = 2) -> Path:
    """Write images/<i>.png (grayscale 8x8) and labels.csv with a stratified split in which
    near-duplicates (4 pairs of 1,797 within 2 phash bits) share a split."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    index = np.arange(len(digits.target))
    train, rest = train_test_split(index, train_size=splits[0], stratify=digits.target, random_state=seed)
    val, test = train_test_split(
        rest, train_size=splits[1] / (splits[1] + splits[2]), stratify=digits.target[rest], random_state=seed
    )
    split_of = {**dict.fromkeys(train, "train"), **dict.fromkeys(val, "val"), **dict.fromkeys(test, "test")}
    rows, hashes = [], []
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        name = f"images/{i:05d}.png"
        image = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8), mode="L")
        image.save(out_dir / name)
        hashes.append(near_duplicates.phash(image.convert("RGB")))  # as the manifest decodes it
        rows.append({"path": name, "label": str(label), "split": split_of[i], "group": ""})
    kept, _ = near_duplicates.keep_together([r["split"] for r in rows], hashes, near_duplicate_distance)
    for row, split in zip(rows, kept, strict=True):
        row["split"] = split
    with (out_dir / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "split", "group"])
        writer.writeheader()
        writer.writerows(rows)
    meta = {"name": "digits", "classes": list(CLASSES), "groups": [], "source": "sklearn.datasets.load_digits"}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out_dir
