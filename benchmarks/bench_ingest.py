"""Disk use of ingesting a user dataset (`data.source: path`): `du` of the user's dataset and
of data/<task> together, before and after prepare's ingest, for the canonical layout (hard
links) and for the old full copy (copytree), on N generated images; and which files change
when one image is edited. Usage: python benchmarks/bench_ingest.py [N] [image_size]."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.data import shapes
from components.stages.prepare import ingest_user_dataset


def du(*paths: Path) -> str:
    """`du -sc` of the paths together (a hard-linked inode counts once), in MiB."""
    out = subprocess.run(["du", "-sc", "--block-size=1M", *map(str, paths)], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].split()[0]


def main(n: int = 20000, size: int = 64) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        user = shapes.generate(tmp / "user", shapes.ShapesConfig(num_images=n, image_size=size, minority_fraction=0.3, seed=1))
        print(f"user dataset {n} images of {size} px: du {du(user)} MiB")
        start = time.perf_counter()
        ingest_user_dataset(user, tmp / "data" / "classification", "auto", (0.7, 0.15, 0.15), 0, 2)
        took = time.perf_counter() - start
        print(f"after ingest (hard links): du user + data/classification {du(user, tmp / 'data')} MiB ({took:.1f} s)")
        shutil.copytree(user, tmp / "copied")
        print(f"old behaviour (copytree): du user + copy {du(user, tmp / 'copied')} MiB")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
