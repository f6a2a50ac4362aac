"""Cross-split near-duplicate pairs (phash within 2 bits, the contract's leakage rule) of the
built-in data, with and without the generators keeping clusters together.
Usage: python benchmarks/bench_near_duplicates.py [N]  (shapes at 32 px, seed 42; digits)"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from components.data import digits, near_duplicates, shapes
from components.data.images import load_rgb


def cross_pairs(root: Path, distance: int = 2) -> tuple[int, dict[str, int]]:
    rows = list(csv.DictReader((root / "labels.csv").open()))
    bits = np.array([near_duplicates.phash(load_rgb(root / r["path"])) for r in rows], dtype=np.uint64)
    splits = np.array([r["split"] for r in rows])
    pairs = 0
    for i in range(len(bits)):
        close = np.flatnonzero(np.bitwise_count(bits[i] ^ bits[i + 1 :]) <= distance) + i + 1
        pairs += int((splits[close] != splits[i]).sum())
    return pairs, {k: int((splits == k).sum()) for k in ("train", "val", "test")}


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    for distance in (None, 2):
        start = time.perf_counter()
        cfg = shapes.ShapesConfig(num_images=n, image_size=32, seed=42, near_duplicate_distance=distance)
        root = shapes.generate(tmp / f"shapes-{distance}", cfg)
        took = time.perf_counter() - start
        print(f"shapes {n} @ 32 px, kept together within {distance} bits: generate {took:.1f} s; "
              f"cross-split pairs, split sizes: {cross_pairs(root)}")
    for distance in (None, 2):
        root = digits.export(tmp / f"digits-{distance}", (0.7, 0.15, 0.15), 42, distance)
        print(f"digits, kept together within {distance} bits: cross-split pairs, split sizes: {cross_pairs(root)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6000)
