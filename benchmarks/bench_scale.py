"""Scale benchmark (issue 18): synthetic shapes at N images, loose vs sharded.

Each phase runs in its own subprocess so its peak RSS (ru_maxrss of that child) is its own:
  generate   shapes.generate (the loose dataset; what prepare writes today)
  manifest   the loose manifest (components/data/manifest.py, a thread pool in one process)
  shard      shards.write_shards (tar shards + Parquet index)
  ray_data   the manifest through Ray Data map_batches over the shards (local Ray, 2 CPUs)
  validate   the data contract (GX, as the validate stage runs it on generated data; near-duplicates
             at the default 2 bits) over the Ray Data manifest, in chunks of validate.ROWS rows
             (BENCH_VALIDATE_ROWS=... to try another size)
  stats      the contract's dataset-level statistics as Ray Data streamed aggregates
(Training input per core, DataLoader vs Ray Data: benchmarks/bench_train_input.py.)
  dvc        `dvc add` / `dvc status` / `dvc push` (local remote) of the loose vs sharded folder

    .venv/bin/python benchmarks/bench_scale.py --images 10000 [--phases generate,shard,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = "classification"


def phase(name: str, work: Path, images: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from components.data import manifest, shapes, shards
    from components.tasks import get_task

    spec, loose, sharded = get_task(TASK), work / "loose", work / "sharded"
    start, cpu = time.perf_counter(), time.process_time()
    extra: dict = {}
    if name == "generate":
        shutil.rmtree(work, ignore_errors=True)
        shapes.generate(loose, shapes.ShapesConfig(num_images=images, image_size=32))
        shutil.rmtree(loose / "masks")  # classification does not read them
    elif name == "manifest":
        manifest.write_manifest(loose, spec, work / "loose_manifest.csv")
    elif name == "shard":
        shutil.rmtree(sharded, ignore_errors=True)
        shutil.copytree(loose, sharded)
        start = time.perf_counter()
        extra["shards"] = shards.write_shards(sharded, spec, 16.0)
    elif name in ("ray_data", "stats"):
        import ray

        from components.config import load_params
        from components.runtime import ray_cluster

        ray_cluster.connect(load_params(ROOT / "params.yaml"))  # as the stages start it (retries a slow raylet)
        ray.data.DataContext.get_current().enable_progress_bars = False
        start = time.perf_counter()
        if name == "ray_data":
            from components.data import ray_data

            extra.update(ray_data.write_manifest(sharded, spec, work / "ray_manifest.csv"))
            extra["nodes"] = len(extra["nodes"])
        elif name == "stats":
            from components.data import ray_data

            extra["stats_images"] = ray_data.contract_stats(sharded, spec)["images"]
    elif name == "validate":
        import os

        from components.config import ContractConfig
        from components.stages.validate import ROWS, validate_dataset

        rows = int(os.environ.get("BENCH_VALIDATE_ROWS", ROWS))  # the chunk size (validate.ROWS unless set)
        start = time.perf_counter()  # after the imports (GX, pandas): the contract's own cost
        extra["rss_after_imports_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        _, summary = validate_dataset(sharded, work / "ray_manifest.csv", spec, ContractConfig(), rows=rows)  # near-duplicates at 2 bits
        extra.update(passed=summary["success"], rules=summary["rules"], rows_per_chunk=rows, failures=summary["failures"])
    elif name == "dvc":
        extra.update(_dvc(work))
    seconds = time.perf_counter() - start
    out = {"phase": name, "images": images, "seconds": round(seconds, 2), "cpu_s": round(time.process_time() - cpu, 2),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}
    return out


def _dvc(work: Path) -> dict:
    dvc = str(Path(sys.executable).parent / "dvc")
    repo = work / "dvcrepo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    run = lambda *a: subprocess.run(a, cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "remote", "add", "-d", "local", str(work / "remote"))
    out = {}
    for name in ("loose", "sharded"):
        shutil.copytree(work / name, repo / name, ignore=shutil.ignore_patterns("*.csv") if name == "x" else None)
        for command in ("add", "status", "push"):
            start = time.perf_counter()
            run(dvc, command, *([name] if command == "add" else [f"{name}.dvc"]))
            out[f"{name}_{command}_s"] = round(time.perf_counter() - start, 2)
        out[f"{name}_files"] = sum(1 for p in (repo / name).rglob("*") if p.is_file())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--phases", default="generate,manifest,shard,ray_data,stats,validate,dvc")
    parser.add_argument("--work", default="/tmp/cvops-bench-scale")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    if args.child:
        print(json.dumps(phase(args.child, work, args.images)))
        return
    for name in args.phases.split(","):
        result = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--work", str(work), "--child", name],
                                capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else f"{name} failed:\n{result.stderr[-3000:]}", flush=True)


if __name__ == "__main__":
    main()
