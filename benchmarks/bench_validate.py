"""Data-contract throughput: images per second and peak memory of manifest + GX validation.

    python benchmarks/bench_validate.py --images 10000 --tasks classification detection segmentation

Generates a shapes dataset once (all three formats), then, in a fresh process per task,
writes the manifests (threaded decode + sha256 + annotation rows) and runs the whole GX
contract without Data Docs (docs are a constant cost, timed separately with --docs). Prints
one JSON line per task and a markdown row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spec_for(task: str):
    from components.tasks import TASKS

    return TASKS[task]


def measure(root: Path, task: str, workers: int, docs: Path | None) -> dict:
    """One task, in this process: seconds for the manifests and for the GX suites."""
    from components.config import ContractConfig
    from components.data.manifest import write_manifest
    from components.stages.validate import validate_dataset

    spec, manifest = spec_for(task), root / f"manifest_{task}.csv"
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch, GX, PIL imported
    start = time.perf_counter()
    images = write_manifest(root, spec, manifest, workers=workers)
    manifest_s = time.perf_counter() - start
    start = time.perf_counter()
    _, summary = validate_dataset(root, manifest, spec, ContractConfig(), docs)
    gx_s = time.perf_counter() - start
    return {
        "task": task, "images": images, "annotations": summary["annotations"], "passed": summary["success"],
        "manifest_s": round(manifest_s, 2), "gx_s": round(gx_s, 2),
        "images_per_s": round(images / (manifest_s + gx_s), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mib": round(baseline, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--tasks", nargs="+", default=["classification", "detection", "segmentation"])
    parser.add_argument("--workers", type=int, default=8, help="manifest threads")
    parser.add_argument("--data", type=Path, default=ROOT / "tmp" / "bench_contract")
    parser.add_argument("--docs", action="store_true", help="also build GX Data Docs (timed in gx_s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.data / f"shapes_{args.images}_{args.size}"
    if args.child:
        docs = args.data / f"docs_{args.child}" if args.docs else None
        print(json.dumps(measure(root, args.child, args.workers, docs)))
        return
    if not (root / "dataset.json").exists():
        from components.data import shapes

        start = time.perf_counter()
        shapes.generate(root, shapes.ShapesConfig(num_images=args.images, image_size=args.size, objects_per_image=(1, 3)))
        print(f"generated {args.images} images in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    for task in args.tasks:  # a fresh process each: peak memory is that task's alone
        cmd = [sys.executable, __file__, "--child", task, *sys.argv[1:]]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(json.dumps(row))
        print(f"| contract throughput, {task}, {row['images']} images {args.size}px | {row['images_per_s']} img/s "
              f"(manifest {row['manifest_s']} s + GX {row['gx_s']} s), peak RSS {row['peak_rss_mib']} MiB "
              f"({row['rss_after_imports_mib']} MiB after imports) | "
              f"`python benchmarks/bench_validate.py {' '.join(sys.argv[1:])}` | {machine} | {time.strftime('%Y-%m-%d')} |")


if __name__ == "__main__":
    main()
