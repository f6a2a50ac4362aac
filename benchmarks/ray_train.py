"""Ray Train benchmarks (CPU): the train stage's steady-state throughput vs a bare PyTorch
loop on the same model, data and batch size; the fixed startup cost of a Ray Train run;
1 vs 2 workers.

    uv run python benchmarks/ray_train.py [--images 2000] [--epochs 4]

Throughput counts training batches only (epoch start to its validation), as images/s
summed over workers, median over the epochs after the first. The stage's figure comes
from its own per-epoch MLflow metric `perf_train_images_per_s` (components/train.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN, make_workspace, stage_env  # noqa: E402
from tests.test_pipeline import client_for, set_param  # noqa: E402

TASK = "classification"


def bench_params(images: int, epochs: int):
    def edit(params: dict) -> dict:
        params["tasks"][TASK]["data"]["num_images"] = images
        params["tasks"][TASK]["train"].update(epochs=epochs, augment=[], scheduler="none")
        params["ray"]["cpus_per_worker"] = 1
        return params
    return edit


def stage(ws: Path, *args: str) -> None:
    result = subprocess.run([str(BIN / "cvops"), "stage", *args, "--task", TASK], cwd=ws, env=stage_env(),
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])


def platform_throughput(ws: Path, workers: int) -> tuple[float, float, float]:
    """(images/s, images per CPU-second of a worker, stage wall time s) of `cvops stage
    train` with N workers, steady state."""
    set_param(ws, "ray.num_workers", workers)
    started = time.perf_counter()
    stage(ws, "train")
    wall = time.perf_counter() - started
    run_id = json.loads((ws / "reports" / TASK / "train_run.json").read_text())["run_id"]
    client = client_for(ws)
    rate, per_cpu = (statistics.median(m.value for m in client.get_metric_history(run_id, name) if m.step >= 1)
                     for name in ("perf_train_images_per_s", "perf_train_images_per_cpu_s"))
    return rate, per_cpu, wall


def bare_throughput(ws: Path, epochs: int) -> tuple[float, float]:
    """The same data pipeline, model, loss and optimizer in a plain loop, one process, one thread."""
    import torch

    from components.config import load_params
    from components.data.datamodule import CVDataModule
    from components.tasks import get_task

    torch.set_num_threads(1)
    cfg, spec = load_params(ws / "params.yaml").task(TASK), get_task(TASK)
    torch.manual_seed(0)
    data = CVDataModule(ws / "data" / TASK, spec, cfg.data.image_size, cfg.train.batch_size, cfg.train.augment, 0)
    model = spec.build_model(cfg.model.arch, len(data.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    rates, per_cpu = [], []
    for _ in range(epochs):
        model.train()
        images, started, cpu_started = 0, time.perf_counter(), time.process_time()
        for batch_images, targets in data.train_dataloader():
            optimizer.zero_grad()
            spec.loss(model, batch_images, targets).backward()
            optimizer.step()
            images += len(batch_images)
        rates.append(images / (time.perf_counter() - started))
        per_cpu.append(images / (time.process_time() - cpu_started))
    return statistics.median(rates[1:]), statistics.median(per_cpu[1:])


def startup_cost() -> dict[str, float]:
    """ray.init of a local cluster, and TorchTrainer.fit() of a no-op loop on 2 workers."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False)
    figures = {"ray_init_s": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as storage:
        for attempt in ("first", "second"):
            started = time.perf_counter()
            TorchTrainer(lambda config: None, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                         run_config=RunConfig(storage_path=storage, name=attempt)).fit()
            figures[f"fit_noop_{attempt}_s"] = time.perf_counter() - started
    ray.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--skip-startup", action="store_true", help="no Ray Train startup-cost figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "ws", edit=bench_params(args.images, args.epochs))
        stage(ws, "prepare")
        bare, bare_cpu = bare_throughput(ws, args.epochs)
        one, one_cpu, one_wall = platform_throughput(ws, 1)
        two, two_cpu, two_wall = platform_throughput(ws, 2)
    figures = {"bare_images_per_s": bare, "stage_1_worker_images_per_s": one, "ratio_1_worker_vs_bare": one / bare,
               "bare_images_per_cpu_s": bare_cpu, "stage_1_worker_images_per_cpu_s": one_cpu,
               "ratio_per_cpu_s_1_worker_vs_bare": one_cpu / bare_cpu,
               "stage_2_workers_images_per_s": two, "speedup_2_vs_1": two / one,
               "stage_2_workers_images_per_cpu_s_per_worker": two_cpu,
               "stage_wall_1_worker_s": one_wall, "stage_wall_2_workers_s": two_wall,
               **({} if args.skip_startup else startup_cost())}
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
