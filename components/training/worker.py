"""The Ray Train side of training: the worker loop (Lightning with Ray's DDP strategy), its
per-epoch report, and the TorchTrainer built from params.yaml's `ray` section. The train
stage fits it once; the tune stage once per trial."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from mlflow.entities import Metric

from components.config import Params, TaskConfig
from components.data.datamodule import CVDataModule
from components.paths import StagePaths
from components.runtime import ray_cluster, tracking
from components.tasks import get_task
from components.training import ray_input
from components.training.module import CVModule


class EpochReport(L.Callback):
    """One line per epoch a person can follow, and the epoch's metrics to MLflow (rank 0).

    Also measures steady-state training throughput (images/s over all workers, training
    batches only: from the epoch's start to its validation), and images per CPU-second of
    this worker process (all its threads), which a busy shared machine does not distort. `run_id` None (a tuning trial)
    prints only: the Tune driver logs trials, as SQLite takes one writer at a time."""

    def __init__(self, tracking_uri: str, run_id: str | None) -> None:
        self.tracking_uri, self.run_id, self.started = tracking_uri, run_id, time.monotonic()
        self.epoch_start, self.cpu_start, self.images, self.images_per_s, self.images_per_cpu_s = 0.0, 0.0, 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_start, self.cpu_start, self.images = time.perf_counter(), time.process_time(), 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.images += len(batch[0])

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.images:
            self.images_per_s = self.images * trainer.world_size / (time.perf_counter() - self.epoch_start)
            self.images_per_cpu_s = self.images / (time.process_time() - self.cpu_start)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # runs after the epoch's validation, so train and val metrics are both in
        if trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["perf/train_images_per_s"] = self.images_per_s
        metrics["perf/train_images_per_cpu_s"] = self.images_per_cpu_s
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "recall/" not in k and "perf/" not in k)
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({time.monotonic() - self.started:.0f}s)", flush=True)
        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(tracking.metric_key(k), v, now, trainer.current_epoch) for k, v in metrics.items()]
        mlflow.MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=batch)


def _announce(config: dict[str, Any]) -> None:
    """Where this worker runs: the placement a person (and the two-node test) can check."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    print(f"worker {ctx.get_world_rank()}/{ctx.get_world_size()} on node {ray.get_runtime_context().get_node_id()} "
          f"pid {os.getpid()} data {config['data_root']}", flush=True)


def train_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: Lightning with Ray's DDP strategy and reporting.
    After a worker failure the group restarts and resumes from the last reported checkpoint."""
    import ray.train
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )
    from ray.train.v2._internal.execution import context as train_context

    for name in ("lightning.pytorch", "lightning.fabric"):  # GPU/TPU/tips INFO chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Reporting training result N" (each epoch): Train logs it through a logger named by its
    # file's path, a child of the root logger that RunConfig's LoggingConfig does not reach
    logging.getLogger(train_context.__file__).setLevel(config["train_log_level"])
    _announce(config)
    L.seed_everything(config["seed"], workers=True, verbose=False)
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    spec = get_task(config["task"])
    train_cfg = config["train"]
    data = CVDataModule(config["data_root"], spec, config["image_size"], train_cfg["batch_size"],
                        train_cfg["augment"], train_cfg["num_dataloader_workers"], seed=config["seed"])
    module = CVModule(config["task"], data.classes, config["model"], train_cfg)
    if config.get("init_state"):
        module.model.load_state_dict(torch.load(config["init_state"], weights_only=True)["state_dict"])
    trainer = L.Trainer(
        max_epochs=train_cfg["epochs"],
        accelerator="gpu" if config["use_gpu"] else "cpu",
        devices="auto",
        precision=config["precision"],
        strategy=_strategy(RayDDPStrategy),
        plugins=[RayLightningEnvironment()],
        callbacks=[RayTrainReportCallback(), EpochReport(config["tracking_uri"], config["run_id"])],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,  # RayTrainReportCallback checkpoints every epoch
        logger=False,
        deterministic=True,
    )
    # deterministic=True also NaN-fills every new tensor (torch.empty) to expose reads of
    # uninitialized memory: ~4 % of a small CNN's CPU step (benchmarks/RESULTS.md). The
    # algorithms stay deterministic without it (PyTorch's docs say valid programs may turn it off)
    torch.utils.deterministic.fill_uninitialized_memory = False
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()  # the latest reported one after a restart, else None
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as ckpt_dir:
        ckpt_path = str(Path(ckpt_dir) / RayTrainReportCallback.CHECKPOINT_NAME) if ckpt_dir else None
        if ckpt_path and trainer.global_rank == 0:
            print(f"resuming from the last checkpoint {checkpoint.path}", flush=True)
        trainer.fit(module, ckpt_path=ckpt_path, **ray_input.fit_loaders(data, config))  # DataLoader, or Ray Data (train.input)


def _strategy(ray_ddp: type) -> Any:
    """Ray's DDP strategy, minus the DDP wrapper at world size 1 (`ray.num_workers: 1`, e.g. one
    GPU), where it only costs: a gradient all-reduce and a buffer broadcast with no peer each
    step, ~3.5 % of a small CNN's step on a CPU (benchmarks/RESULTS.md). The process group is
    still set up: metric syncs and Ray's reporting work the same."""

    class RayStrategy(ray_ddp):
        def configure_ddp(self) -> None:
            if self.world_size > 1:
                super().configure_ddp()

    return RayStrategy()


def worker_config(params: Params, task: str, cfg: TaskConfig, use_gpu: bool, run_id: str | None) -> dict[str, Any]:
    """The plain-dict config every worker receives (the task config after tuning overrides)."""
    precision = params.ray.precision
    if precision == "auto":
        precision = "bf16-mixed" if use_gpu else "32-true"
    return {
        "task": task, "seed": params.seed, "data_root": ray_cluster.dataset_root(params, StagePaths(task).data),
        "image_size": cfg.data.image_size, "model": cfg.model.model_dump(), "train": cfg.train.model_dump(),
        "cpus_per_worker": params.ray.cpus_per_worker, "use_gpu": use_gpu, "precision": precision,
        "tracking_uri": tracking.tracking_uri(params), "run_id": run_id,
        "init_state": ray_cluster.resolve_init(cfg.model.init_from, params),
        "train_log_level": params.ray.train_log_level,
    }


def build_trainer(params: Params, config: dict[str, Any], name: str, max_failures: int | None = None,
                  callbacks: list | None = None):
    """A TorchTrainer of `train_worker` with the cluster settings of params.yaml's `ray`."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    monitor = f"val/{get_task(config['task']).monitor}"
    resources = {"CPU": params.ray.cpus_per_worker, **params.ray.resources_per_worker}
    if config["use_gpu"]:
        resources.setdefault("GPU", 1)
    return TorchTrainer(
        train_worker,
        train_loop_config=config,
        **ray_input.trainer_datasets(config),  # train.input ray_data: the train shards as a Ray Dataset
        scaling_config=ScalingConfig(num_workers=params.ray.num_workers, use_gpu=config["use_gpu"],
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path(params),
            checkpoint_config=CheckpointConfig(num_to_keep=params.ray.checkpoints_to_keep,
                                               checkpoint_score_attribute=monitor, checkpoint_score_order="max"),
            failure_config=FailureConfig(
                max_failures=params.ray.max_failures if max_failures is None else max_failures,
                controller_failure_limit=0,  # a controller that cannot place its workers fails the run
            ),
            callbacks=callbacks,
            # Train's INFO lines (each checkpoint, each report) on the console; its session
            # log files keep every level
            logging_config=LoggingConfig(log_level=params.ray.train_log_level),
        ),
    )


def storage_path(params: Params) -> str:
    """Ray needs an absolute path or a URI (s3://, gs://, ...)."""
    path = params.ray.storage_path
    return path if "://" in path else str(Path(path).resolve())
