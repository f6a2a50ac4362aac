"""Ray Train benchmarks (CPU): the train stage's steady-state throughput vs a bare PyTorch
loop on the same model, data and batch size; the fixed startup cost of a Ray Train run;
1 vs 2 workers.

    uv run python benchmarks/ray_train.py [--images 2000] [--epochs 4]

Throughput counts training batches only (epoch start to its validation), as images/s
summed over workers, median over the epochs after the first. The stage's figure comes
from its own per-epoch MLflow metric `perf_train_images_per_s` (components/train.py).

    uv run python benchmarks/ray_train.py --breakdown [--repeats 3]

The gap between the train stage (1 worker) and the bare loop per CPU-second, one layer at a
time, each variant in its own process (1 torch thread), same measuring window as the stage
(training batches of an epoch, median over the epochs after the first), interleaved repeats:
bare loop -> Lightning (single device, no self.log) -> + self.log -> + deterministic=True ->
+ DDP at world size 1 (gloo; what RayDDPStrategy is) -> the Ray Train stage itself.
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
    run_id = json.loads((ws / "models" / TASK / "run.json").read_text())["run_id"]
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


LAYERS = {  # variant: (self.log, deterministic, DDP at world size 1: None or its kwargs)
    "lightning": (False, False, None),
    "lightning+log": (True, False, None),
    "lightning+log+deterministic": (True, True, None),
    "lightning+log+deterministic+ddp": (True, True, {}),
}


def lightning_throughput(ws: Path, epochs: int, log: bool, deterministic: bool, ddp: dict | None) -> float:
    """Images per CPU-second of this process with the stage's LightningModule and Trainer
    settings, without Ray; measured by the stage's own EpochReport callback."""
    import types

    import lightning as L
    import torch

    from components.config import load_params
    from components.data.datamodule import CVDataModule
    from components.module import CVModule
    from components.tasks import get_task
    from components.train import EpochReport

    torch.set_num_threads(1)
    cfg, spec = load_params(ws / "params.yaml").task(TASK), get_task(TASK)
    L.seed_everything(0, verbose=False)
    data = CVDataModule(ws / "data" / TASK, spec, cfg.data.image_size, cfg.train.batch_size, cfg.train.augment, 0)
    module = CVModule(TASK, data.classes, cfg.model.model_dump(), cfg.train.model_dump())
    if not log:
        module.training_step = types.MethodType(lambda self, batch, _: spec.loss(self.model, *batch), module)
    rates = []

    class Meter(EpochReport):
        def on_validation_epoch_start(self, trainer, pl_module):
            super().on_validation_epoch_start(trainer, pl_module)
            if not trainer.sanity_checking and self.images:
                rates.append(self.images_per_cpu_s)

    strategy = "auto" if ddp is None else L.pytorch.strategies.DDPStrategy(process_group_backend="gloo", **ddp)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, strategy=strategy, deterministic=deterministic,
                        callbacks=[Meter("", None)], enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, logger=False)
    trainer.fit(module, datamodule=data)
    return statistics.median(rates[1:])


def run_variant(ws: Path, variant: str, epochs: int) -> float:
    """One variant in a fresh process (no state shared: deterministic flags, process groups)."""
    out = subprocess.run([sys.executable, __file__, "--variant", variant, "--workspace", str(ws), "--epochs", str(epochs)],
                         env={**stage_env(), "OMP_NUM_THREADS": "1"},  # as Ray sets it for a 1-CPU worker
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    return float(out.stdout.strip().splitlines()[-1])


def breakdown(ws: Path, epochs: int, repeats: int) -> dict[str, float]:
    """Images per CPU-second of each layer (median over interleaved repeats) and its ratio to the bare loop."""
    figures: dict[str, list[float]] = {name: [] for name in ["bare", *LAYERS, "ray_train_stage_1_worker"]}
    for _ in range(repeats):
        for name in figures:
            if name == "ray_train_stage_1_worker":
                figures[name].append(platform_throughput(ws, 1)[1])
            else:
                figures[name].append(run_variant(ws, name, epochs))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    return {**{f"{k}_images_per_cpu_s": v for k, v in medians.items()},
            **{f"ratio_{k}_vs_bare": v / medians["bare"] for k, v in medians.items() if k != "bare"},
            **{f"all_{k}": v for k, v in figures.items()}}


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
    parser.add_argument("--breakdown", action="store_true", help="the stage-vs-bare gap per CPU-second, layer by layer")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the breakdown")
    parser.add_argument("--variant", choices=["bare", *LAYERS], help=argparse.SUPPRESS)  # one breakdown process
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(bare_throughput(args.workspace, args.epochs)[1] if args.variant == "bare"
              else lightning_throughput(args.workspace, args.epochs, *LAYERS[args.variant]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "ws", edit=bench_params(args.images, args.epochs))
        stage(ws, "prepare")
        if args.breakdown:
            print(json.dumps({k: [round(x, 1) for x in v] if isinstance(v, list) else round(v, 3)
                              for k, v in breakdown(ws, args.epochs, args.repeats).items()}, indent=2))
            return
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
