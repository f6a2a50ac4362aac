"""Training input per CPU-second (issue 18): the bare DataLoader over loose files vs Ray Data
over the same images as tar shards, as a Ray Train worker consumes them (decode, transform,
collate; no model), over several epochs.

  loader      CVDataModule's train DataLoader (num_workers 0) over the loose files
  ray         train.input ray_data as it is (ray_input.train_datasets: ShardSamples, the shard
              index's offsets; RayTrainBatches.collate)
  ray_bytes   the same rows without collate (what Ray Data itself costs)
  webdataset  the previous pipeline, kept here as the reference: read_webdataset + a collate
              that json.loads each row's record and normalises image by image

Every process's CPU is counted (the driver and the local Ray cluster's, exited ones too: TreeCPU). Epoch 1 pays the
start of the Ray worker that runs the read tasks (imports); a training run pays it once, so the
later epochs are the steady state. torch runs one thread, as a Ray Train worker with 1 CPU does
(Ray sets OMP_NUM_THREADS to the worker's CPUs; --threads to change).

    .venv/bin/python benchmarks/bench_train_input.py --images 10000 --size 32 [--variants loader,ray]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TASK = "classification"


def prepare(work: Path, images: int, size: int) -> None:
    from components.data import shapes, shards
    from components.tasks import get_task

    shutil.rmtree(work, ignore_errors=True)
    shapes.generate(work / "loose", shapes.ShapesConfig(num_images=images, image_size=size))
    shutil.rmtree(work / "loose" / "masks")  # classification does not read them
    shutil.copytree(work / "loose", work / "sharded")
    shards.write_shards(work / "sharded", get_task(TASK), 16.0)


def _webdataset_epoch(sharded: Path, batches, seed: int) -> int:
    """The pipeline before ShardSamples (main at d705420), for the before/after rows."""
    import ray
    from ray.data import FileShuffleConfig

    from components.data import shards
    from components.data.datamodule import ImageDataset, build_transform
    from components.training.ray_input import SHUFFLE_BUFFER

    transform = build_transform(batches.spec, batches.size, ["hflip"])

    def collate(batch):
        records = [json.loads(raw) for raw in batch["json"]]
        files = {r["path"]: data for r, data in zip(records, batch["image.png"], strict=True)}
        dataset = ImageDataset(shards.MemberRoot(files), records, batches.spec, batches.classes, transform)
        return batches.spec.collate([dataset[i] for i in range(len(dataset))])

    ds = ray.data.read_webdataset(shards.shard_paths(sharded, "train"), decoder=None,
                                  shuffle=FileShuffleConfig(seed=seed), num_cpus=0)
    return lambda: sum(len(b[0]) for b in ds.iter_torch_batches(
        batch_size=64, collate_fn=collate, local_shuffle_buffer_size=SHUFFLE_BUFFER, local_shuffle_seed=0))


class TreeCPU:
    """CPU seconds of this process and every descendant, including those that exited since:
    Ray starts and reaps worker processes during an epoch, and a sum over the live ones only
    (bench_scale's `_tree_cpu`) drops an exited worker's CPU (it even went negative). A
    thread samples every descendant's CPU time 10 times a second and keeps each pid's last
    figure, so an exited process loses at most its last 0.1 s."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            with self.lock:
                self.seen[process.pid] = times.user + times.system
                if process.pid not in self.names:
                    with contextlib.suppress(psutil.Error):
                        self.names[process.pid] = process.name()

    def _loop(self) -> None:
        while True:
            self._sample()
            time.sleep(0.1)

    def top(self, before: dict[int, float], n: int = 4) -> list[str]:
        """The n processes that used the most CPU since `before` (a copy of `seen`): where it went."""
        with self.lock:
            spent = {pid: cpu - before.get(pid, 0.0) for pid, cpu in self.seen.items()}
        best = sorted(spent, key=spent.get, reverse=True)[:n]
        return [f"{self.names.get(pid, pid)}{' (new)' if pid not in before else ''}: {spent[pid]:.1f}" for pid in best]

    def __call__(self) -> float:
        self._sample()
        with self.lock:
            return sum(self.seen.values())


def run(variant: str, work: Path, size: int, epochs: int, threads: int) -> list[dict]:
    import torch

    from components.data.datamodule import CVDataModule, dataset_classes
    from components.tasks import get_task

    torch.set_num_threads(threads)
    _tree_cpu = TreeCPU()
    spec, sharded = get_task(TASK), work / "sharded"
    if variant == "loader":
        loader = CVDataModule(work / "loose", spec, size, 64, ["hflip"]).train_dataloader()
        epoch = lambda: sum(len(b[0]) for b in loader)  # noqa: E731
    else:
        import ray

        from components.config import load_params
        from components.runtime import ray_cluster
        from components.training.ray_input import SHUFFLE_BUFFER, RayTrainBatches, train_datasets

        ray_cluster.connect(load_params(ROOT / "params.yaml"))  # as the stages start it
        ray.data.DataContext.get_current().enable_progress_bars = False
        records = spec.read_records(sharded)
        batches = RayTrainBatches.__new__(RayTrainBatches)  # its collate, without a Train context
        batches.setup(spec, dataset_classes(sharded, spec, records), size, ["hflip"], records)
        batches.size = size
        if variant == "webdataset":
            epoch = _webdataset_epoch(sharded, batches, 0)
        else:
            ds = train_datasets(str(sharded), 0)["train"]
            if variant == "ray_bytes":
                epoch = lambda: sum(len(b["path"]) for b in ds.iter_batches(  # noqa: E731
                    batch_size=64, batch_format="numpy", local_shuffle_buffer_size=SHUFFLE_BUFFER, local_shuffle_seed=0))
            else:
                epoch = lambda: sum(len(b[0]) for b in ds.iter_torch_batches(  # noqa: E731
                    batch_size=64, collate_fn=batches.collate, local_shuffle_buffer_size=SHUFFLE_BUFFER,
                    local_shuffle_seed=0))
        time.sleep(3)  # the cluster's own start settles (its CPU is not the input's)
    out = []
    for e in range(1, epochs + 1):
        start, cpu, driver = time.perf_counter(), _tree_cpu(), time.process_time()
        before = dict(_tree_cpu.seen)
        images = epoch()
        seconds, cpu_s, driver = time.perf_counter() - start, _tree_cpu() - cpu, time.process_time() - driver
        out.append({"variant": variant, "size": size, "epoch": e, "images": images, "seconds": round(seconds, 2),
                    "cpu_all_s": round(cpu_s, 2), "driver_cpu_s": round(driver, 2), "images_per_cpu_s": round(images / cpu_s),
                    "top_cpu": _tree_cpu.top(before)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="loader,ray,ray_bytes,webdataset")
    parser.add_argument("--work", default=None, help="default /tmp/cvops-bench-input-<images>-<size>")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    work = Path(args.work or f"/tmp/cvops-bench-input-{args.images}-{args.size}")
    if args.child:
        for row in run(args.child, work, args.size, args.epochs, args.threads):
            print(json.dumps(row), flush=True)
        return
    if not (work / "sharded" / "shards.parquet").exists():
        prepare(work, args.images, args.size)
    for variant in args.variants.split(","):
        result = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--epochs", str(args.epochs),
                                 "--threads", str(args.threads), "--work", str(work), "--child", variant],
                                capture_output=True, text=True)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if not rows:
            print(f"{variant} failed:\n{result.stderr[-3000:]}", flush=True)
            continue
        for row in rows:
            print(json.dumps(row), flush=True)
        warm = rows[1:] or rows
        print(json.dumps({"variant": variant, "size": args.size, "first_epoch_images_per_cpu_s": rows[0]["images_per_cpu_s"],
                          "warm_images_per_cpu_s": round(sum(r["images"] for r in warm) / sum(r["cpu_all_s"] for r in warm)),
                          "warm_images_per_s": round(sum(r["images"] for r in warm) / sum(r["seconds"] for r in warm))}),
              flush=True)


if __name__ == "__main__":
    main()
