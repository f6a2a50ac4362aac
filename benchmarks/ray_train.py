"""Ray Train benchmarks (CPU): the train stage's steady-state throughput vs a bare PyTorch
loop on the same model, data and batch size; the fixed startup cost of a Ray Train run;
1 vs 2 workers.

    uv run python benchmarks/ray_train.py [--images 2000] [--epochs 4]

Throughput counts training batches only (epoch start to its validation), as images/s
summed over workers, median over the epochs after the first. The stage's figure comes
from its own per-epoch MLflow metric `perf_train_images_per_s` (components/training/worker.py).

    uv run python benchmarks/ray_train.py --breakdown [--repeats 3]

The gap between the train stage (1 worker) and the bare loop per CPU-second, one layer at a
time (1 torch thread, the stage's measuring window: the training batches of an epoch): bare
loop -> Lightning (single device, no self.log) -> + self.log -> + deterministic=True (with and
without its NaN fill of new tensors) -> + DDP at world size 1 (gloo; what RayDDPStrategy
wraps), these taking turns epoch by epoch in one process; the per-step cost of deterministic
mode and DDP alone, in blocks of 20 steps taking turns; then the Ray Train stage itself against
a bare loop run just before it.
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


LAYERS = {  # layer: (self.log, deterministic, its NaN fill of new tensors, DDP at world size 1)
    "lightning": (False, False, False, False),
    "lightning+log": (True, False, False, False),
    "lightning+log+deterministic": (True, True, True, False),  # Lightning's deterministic=True as is
    "lightning+log+deterministic_nofill": (True, True, False, False),  # the stage's settings (1 worker)
    "lightning+log+deterministic_nofill+ddp": (True, True, False, True),  # the stage's settings before
}


def layer_rates(ws: Path, repeats: int) -> dict[str, list[float]]:
    """Images per CPU-second of one training epoch of the bare loop and of each Lightning layer
    (the stage's LightningModule and Trainer settings, its EpochReport window), in this one
    process, the layers taking turns epoch by epoch: what else runs on the machine meanwhile
    shifts them all alike. The first round warms up and is dropped."""
    import os
    import types

    import lightning as L
    import torch

    from components.config import load_params
    from components.data.datamodule import CVDataModule
    from components.tasks import get_task
    from components.training.module import CVModule
    from components.training.worker import EpochReport

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)  # DDP's, kept for every round
    cfg, spec = load_params(ws / "params.yaml").task(TASK), get_task(TASK)
    L.seed_everything(0, verbose=False)
    data = CVDataModule(ws / "data" / TASK, spec, cfg.data.image_size, cfg.train.batch_size, cfg.train.augment, 0)
    bare = spec.build_model(cfg.model.arch, len(data.classes))
    optimizer = torch.optim.AdamW(bare.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    modules = {name: CVModule(TASK, data.classes, cfg.model.model_dump(), cfg.train.model_dump()) for name in LAYERS}
    for name, (log, *_) in LAYERS.items():
        if not log:
            modules[name].training_step = types.MethodType(lambda self, batch, _: spec.loss(self.model, *batch), modules[name])
    rates: dict[str, list[float]] = {"bare": [], **{name: [] for name in LAYERS}}

    class Meter(EpochReport):
        def on_validation_epoch_start(self, trainer, pl_module):
            super().on_validation_epoch_start(trainer, pl_module)
            if not trainer.sanity_checking and self.images:
                rates[name].append(self.images_per_cpu_s)

    for _ in range(repeats + 1):
        torch.use_deterministic_algorithms(False)  # PyTorch's defaults for the bare loop
        torch.utils.deterministic.fill_uninitialized_memory = True
        bare.train()
        images, cpu_started = 0, time.process_time()
        for batch_images, targets in data.train_dataloader():
            optimizer.zero_grad()
            spec.loss(bare, batch_images, targets).backward()
            optimizer.step()
            images += len(batch_images)
        rates["bare"].append(images / (time.process_time() - cpu_started))
        for name, (_, deterministic, fill, ddp) in LAYERS.items():
            strategy = L.pytorch.strategies.DDPStrategy(process_group_backend="gloo") if ddp else "auto"
            trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, strategy=strategy, deterministic=deterministic,
                                callbacks=[Meter("", None)], num_sanity_val_steps=0, enable_progress_bar=False,
                                enable_model_summary=False, enable_checkpointing=False, logger=False)
            torch.utils.deterministic.fill_uninitialized_memory = fill
            trainer.fit(modules[name], datamodule=data)
    return {name: values[1:] for name, values in rates.items()}


def step_costs(ws: Path, repeats: int) -> dict[str, float]:
    """CPU milliseconds of one training step (a real batch, forward + backward + AdamW) of the
    bare model under each setting, blocks of 20 steps taking turns in this one process:
    fine enough to see a few per cent that epoch-level figures on a busy machine blur."""
    import os

    import torch
    from torch.nn.parallel import DistributedDataParallel

    from components.config import load_params
    from components.data.datamodule import CVDataModule
    from components.tasks import get_task

    torch.set_num_threads(1)
    if not torch.distributed.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    cfg, spec = load_params(ws / "params.yaml").task(TASK), get_task(TASK)
    data = CVDataModule(ws / "data" / TASK, spec, cfg.data.image_size, cfg.train.batch_size, cfg.train.augment, 0)
    images, targets = next(iter(data.train_dataloader()))
    settings = {"plain": (False, True, False), "deterministic": (True, True, False),
                "deterministic_nofill": (True, False, False), "ddp_world_size_1": (False, True, True)}
    models = {}
    for name, (*_, ddp) in settings.items():
        torch.manual_seed(0)
        model = spec.build_model(cfg.model.arch, len(data.classes))
        model = DistributedDataParallel(model) if ddp else model
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=cfg.train.lr))
    costs: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, (deterministic, fill, _) in settings.items():
            torch.use_deterministic_algorithms(deterministic)
            torch.utils.deterministic.fill_uninitialized_memory = fill
            model, optimizer = models[name]
            started = time.process_time()
            for _ in range(20):
                optimizer.zero_grad()
                spec.loss(model, images, targets).backward()
                optimizer.step()
            costs[name].append((time.process_time() - started) / 20 * 1000)
    return {name: statistics.median(values) for name, values in costs.items()}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_variant(ws: Path, variant: str, epochs: int) -> object:
    """`bare` or `layers` in a fresh process, 1 thread, OMP_NUM_THREADS=1 as Ray sets it for a
    1-CPU worker (else Lightning's DDP raises the thread count; spinning OpenMP threads then
    inflate CPU-seconds on a busy machine)."""
    out = subprocess.run([sys.executable, __file__, "--variant", variant, "--workspace", str(ws), "--epochs", str(epochs)],
                         env={**stage_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def breakdown(ws: Path, epochs: int, repeats: int) -> dict[str, object]:
    """(1) Each Lightning layer against the bare loop, epochs taking turns in one process
    (median of `repeats` x `epochs` rounds). (2) The Ray Train stage (1 worker) against the bare
    loop run just before it in a process of its own (median of the per-pair ratios): Ray's
    layer is what (2) adds to (1)."""
    steps = run_variant(ws, "steps", 4 * repeats * epochs)
    layers = run_variant(ws, "layers", repeats * epochs)
    medians = {name: statistics.median(values) for name, values in layers.items()}
    return {**{f"step_ms_{k}": v for k, v in steps.items()},
            **{f"step_cost_{k}_vs_plain": v / steps["plain"] for k, v in steps.items() if k != "plain"},
            **{f"{k}_images_per_cpu_s": v for k, v in medians.items()},
            **{f"ratio_{k}_vs_bare": v / medians["bare"] for k, v in medians.items() if k != "bare"},
            **stage_vs_bare(ws, epochs, repeats)}


def stage_vs_bare(ws: Path, epochs: int, repeats: int) -> dict[str, object]:
    """The train stage (1 worker) against the bare loop run just before it, `repeats` pairs."""
    pairs = [(run_variant(ws, "bare", epochs), platform_throughput(ws, 1)[1]) for _ in range(repeats)]
    return {"stage_vs_bare_pairs_images_per_cpu_s": pairs,
            "ratio_ray_train_stage_1_worker_vs_bare": statistics.median(stage / bare for bare, stage in pairs)}


def _rounded(value: object) -> object:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return round(value, 3) if isinstance(value, float) else value


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
    parser.add_argument("--stage-vs-bare", action="store_true", help="only the breakdown's last part: stage vs bare pairs")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the breakdown")
    parser.add_argument("--variant", choices=["bare", "layers", "steps"], help=argparse.SUPPRESS)  # one breakdown process
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        measure = {"bare": lambda ws, n: bare_throughput(ws, n)[1], "layers": layer_rates, "steps": step_costs}
        print(json.dumps(measure[args.variant](args.workspace, args.epochs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "ws", edit=bench_params(args.images, args.epochs))
        stage(ws, "prepare")
        if args.breakdown or args.stage_vs_bare:
            measure = breakdown if args.breakdown else stage_vs_bare
            print(json.dumps(_rounded(measure(ws, args.epochs, args.repeats)), indent=1))
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
