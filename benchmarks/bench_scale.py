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
import os
import resource
import shutil
import subprocess
import sys
import tempfile
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
        extra["generate_s"] = round(time.perf_counter() - start, 2)  # before the cleanup below
        shutil.rmtree(loose / "masks")  # classification does not read them (10^6 unlinks: minutes, in `seconds`)
    elif name == "manifest":
        manifest.write_manifest(loose, spec, work / "loose_manifest.csv")
    elif name == "shard":
        shutil.rmtree(sharded, ignore_errors=True)
        # the images hard-linked, not copied (10^6 copies took minutes; write_shards reads them
        # and unlinks its links, the loose ones stay); the small metadata files copied
        shutil.copytree(loose, sharded, copy_function=_link_images)
        start, cpu = time.perf_counter(), time.process_time()
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
    # generate's worker processes, once reaped (their ru_maxrss is not theirs: a fork-exec
    # child's high-water mark includes the parent's pages; the watcher samples the tree instead)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    if workers.ru_utime:
        extra["workers_cpu_s"] = round(workers.ru_utime + workers.ru_stime, 2)
    out = {"phase": name, "images": images, "seconds": round(seconds, 2), "cpu_s": round(time.process_time() - cpu, 2),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra,
           "commit": _commit(), "loadavg": os.getloadavg()}
    return out


def _link_images(src: str, dst: str) -> None:
    if src.endswith(".png"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def _commit() -> str:
    run = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return run.stdout.strip()


def _progress(name: str, work: Path) -> str:
    """How far a long phase has got, from what it has written so far (cheap to look at)."""
    if name == "generate" and (work / "loose" / "images").is_dir():
        return f"{sum(1 for _ in os.scandir(work / 'loose' / 'images'))} images written"
    if name == "shard" and (work / "sharded" / "shards").is_dir():
        return f"{sum(p.stat().st_size for p in (work / 'sharded' / 'shards').iterdir()) / 1e6:.0f} MB of shards"
    if name == "ray_data" and (work / "ray_manifest.csv").exists():
        return f"{(work / 'ray_manifest.csv').stat().st_size / 1e6:.1f} MB of manifest"
    return ""


def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            pids += [int(c) for c in task.read_text().split()]
        i += 1
    return pids


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def _watch(name: str, child: subprocess.Popen, work: Path, every: float) -> int:
    """Sample the phase's process tree (it and its descendants: generate's workers, the Ray
    cluster a Ray phase starts) every 2 s until it ends; returns the largest total RSS seen
    (MiB). With `every`, a progress line every `every` seconds (a 10^6 run takes a while):
    wall, the phase process's CPU-s, the tree's RSS now and at most, the load, _progress."""
    start, peak, printed = time.perf_counter(), 0, 0.0
    while child.poll() is None:
        time.sleep(2.0)
        try:
            rss = 0
            for pid in _tree(child.pid):
                rss += _rss_mib(pid)
            peak = max(peak, rss)
            if every and time.perf_counter() - printed >= every:
                printed = time.perf_counter()
                stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
                print(f"# {name}: {printed - start:.0f} s, cpu {cpu:.0f} s (phase process), tree rss {rss} MiB "
                      f"(peak {peak}), load {os.getloadavg()[0]:.1f}, {_progress(name, work)}", flush=True)
        except (OSError, ValueError, IndexError):  # a process ended while being read
            continue
    return peak


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
    parser.add_argument("--progress-every", type=float, default=0, help="seconds between progress lines (0: none)")
    args = parser.parse_args()
    work = Path(args.work)
    if args.child:
        print(json.dumps(phase(args.child, work, args.images)))
        return
    for name in args.phases.split(","):
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            child = subprocess.Popen([sys.executable, __file__, "--images", str(args.images), "--work", str(work),
                                      "--child", name], stdout=stdout, stderr=stderr, text=True)
            peak = _watch(name, child, work, args.progress_every)
            child.wait()
            stdout.seek(0)
            stderr.seek(0)
            lines = [line for line in stdout.read().splitlines() if line.startswith("{")]
            if lines:
                print(json.dumps({**json.loads(lines[-1]), "tree_peak_rss_mib_sampled": peak}), flush=True)
            else:
                print(f"{name} failed:\n{stderr.read()[-3000:]}", flush=True)


if __name__ == "__main__":
    main()
