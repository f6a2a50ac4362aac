"""The train stage: Lightning on Ray Train (TorchTrainer, N workers, GPU when present).

The driver creates the MLflow run, starts a TorchTrainer whose workers run `train_worker`
(Lightning with RayDDPStrategy), and writes the best checkpoint to models/<task>/model.pt.
Only rank 0 talks to MLflow from inside the workers (SQLite takes one writer at a time).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import mlflow
import torch

from components.config import Params, TaskConfig, params_hash
from components.paths import StagePaths
from components.registry.lineage import data_hash
from components.runtime import ray_cluster, tracking
from components.serving.checkpoint import save_checkpoint
from components.serving.model import log_model
from components.tasks import get_task
from components.training import resume
from components.training.module import CVModule
from components.training.tuned import tuned_config
from components.training.worker import build_trainer, storage_path, worker_config


def _flat(prefix: str, section: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": json.dumps(v) if isinstance(v, list | dict) else v for k, v in section.items()}


def run(params: Params, task: str) -> Path:
    """Train `task` on its prepared data (with the tune stage's best config); returns the
    path of the written checkpoint. An interrupted training with the same inputs is resumed
    (components.training.resume)."""
    cfg, tuned = tuned_config(params, task)
    experiment_id = tracking.setup(params, task)
    with resume.slot(storage_path(params), task, resume.training_inputs(params, task, cfg)) as slot, \
            _mlflow_run(slot, task, experiment_id) as run:
        mlflow.set_tags({"cvops.task": task, "cvops.stage": "train", "cvops.params_hash": params_hash(cfg),
                         "cvops.tuned_by": tuned.get("run_id") or "none", "cvops.ray_run": slot.name})
        paths = StagePaths(task)
        if paths.manifest.exists():  # `cvops stage train` on data prepared elsewhere may lack it
            tracking.log_dataset(paths.manifest, data_hash(f"prepare@{task}", str(paths.data)), f"{task}-data")
        mlflow.log_params({**_flat("model", cfg.model.model_dump()), **_flat("train", cfg.train.model_dump()),
                           **_flat("data", cfg.data.model_dump()), "ray.num_workers": params.ray.num_workers})
        use_gpu, started_here = ray_cluster.connect(params)
        try:
            config = worker_config(params, task, cfg, use_gpu, run.info.run_id)
            slot.start(run.info.run_id)
            result = build_trainer(params, config, name=slot.name).fit()
        finally:
            if started_here:
                ray_cluster.shutdown()
        write_outputs(task, cfg, result, experiment_id, run.info.run_id)
        mlflow.set_tag("cvops.ray_run", slot.finish(run.info.run_id))
    return StagePaths(task).model


@contextlib.contextmanager
def _mlflow_run(slot: resume.Slot, task: str, experiment_id: str):
    """The MLflow run of the training: the interrupted one's when resuming (if it still exists).
    Runs of trainings whose process died are marked FAILED first."""
    run_id = slot.resume_run_id
    for dead in resume.fail_dead_runs(mlflow.MlflowClient(), experiment_id, task, keep=run_id):
        print(f"MLflow run {dead}: its train stage died before it ended; marked FAILED", flush=True)
    if run_id:
        try:
            found = mlflow.MlflowClient().get_run(run_id)
            run_id = run_id if (found.info.lifecycle_stage, found.info.experiment_id) == ("active", experiment_id) else None
        except mlflow.exceptions.MlflowException:
            run_id = None
        print(f"resuming the interrupted training {slot.name} (same params, data and code): its last checkpoint, "
              f"{f'MLflow run {run_id}' if run_id else f'a new MLflow run (run {slot.resume_run_id} is gone)'}", flush=True)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else tracking.run_name(task, "train"), experiment_id=experiment_id) as run:
        mlflow.set_tags(resume.owner_tags())  # this process now: a later stage can tell whether it died
        if slot.resume_run_id:  # which interrupted training this one continues
            mlflow.set_tags({"cvops.resumed_from_run": slot.resume_run_id, "cvops.resumed_ray_run": slot.name})
        yield run


def write_outputs(task: str, cfg: TaskConfig, result, experiment_id: str, run_id: str) -> None:
    """models/<task>/model.pt from the best checkpoint, the MLflow model and the run info."""
    paths, spec = StagePaths(task), get_task(task)
    best, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1][f"val/{spec.monitor}"])
    with best.as_directory() as ckpt_dir:
        lightning_ckpt = torch.load(Path(ckpt_dir) / "checkpoint.ckpt", map_location="cpu", weights_only=True)
    module = CVModule(**lightning_ckpt["hyper_parameters"])
    module.load_state_dict(lightning_ckpt["state_dict"])
    save_checkpoint(paths.model, task, cfg.model.arch, module.classes, cfg.data.image_size, module.model)
    numbers = {k: v for k, v in best_metrics.items() if isinstance(v, int | float)}
    # the best checkpoint's validation metrics under best/; its epoch and step are tags, not one-point charts
    mlflow.log_metrics({tracking.metric_key(f"best/{k}"): float(v) for k, v in numbers.items() if k not in ("epoch", "step")})
    mlflow.set_tags({f"cvops.best_{k}": int(numbers[k]) for k in ("epoch", "step") if k in numbers})
    model_info = log_model(paths.model)
    paths.run_info.parent.mkdir(parents=True, exist_ok=True)  # `cvops stage train` alone
    paths.run_info.write_text(json.dumps({"run_id": run_id, "experiment_id": experiment_id, "model_uri": model_info.model_uri}, indent=2))
