"""The tune stage: Ray Tune over the train stage's own training (one TorchTrainer per trial).

Optuna proposes configs from `tasks.<task>.tune.search_space`, ASHA stops poor trials after
each epoch, every trial is a nested MLflow run under the tuning run (logged from this
driver process: SQLite takes one writer at a time). The best config goes to
reports/<task>/tune.json, which the train stage applies on top of params.yaml. Tuning off:
the file holds no overrides, so train always reads one file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from components.config import ConfigError, Params, TaskConfig, params_hash
from components.paths import StagePaths
from components.training.tuned import apply_overrides

TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}  # the trial actor only waits on its Train run


def search_space(cfg: TaskConfig) -> dict[str, Any]:
    from ray import tune

    samplers = {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}
    return {key: tune.choice(dim.values) if dim.type == "choice" else samplers[dim.type](dim.low, dim.high)
            for key, dim in cfg.tune.search_space.items()}


def trial(config: dict[str, Any], worker: dict[str, Any], params_json: str) -> None:
    """A Tune function trainable: one Train run of the sampled config; each epoch's
    report reaches Tune (and ASHA) through TuneReportCallback. `worker` is the train
    stage's worker config, built on the driver (paths absolute: a trial actor runs in
    its trial directory)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from components.training.worker import build_trainer

    sampled = apply_overrides(TaskConfig(model=worker["model"], train=worker["train"]), config)
    worker = {**worker, "model": sampled.model.model_dump(), "train": sampled.train.model_dump()}
    name = f"{worker['task']}-trial-{tune.get_context().get_trial_id()}"
    build_trainer(Params.model_validate_json(params_json), worker, name, max_failures=0,
                        callbacks=[TuneReportCallback()]).fit()


def run(params: Params, task: str) -> Path:
    """Search (or, tuning off, write no overrides); returns reports/<task>/tune.json."""
    cfg, out = params.task(task), StagePaths(task).tune_result
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.tune.enabled and not cfg.tune.search_space:
        raise ConfigError(f"params.yaml: tasks.{task}.tune.enabled is true but its search_space is empty; "
                          "add dimensions (e.g. train.lr: {type: loguniform, low: 0.0003, high: 0.03}) or set enabled: false")
    if not cfg.tune.enabled:
        out.write_text(json.dumps({"tuned": False, "best_config": {}, "run_id": None}, indent=2))
        print(f"tuning is off for {task} (tasks.{task}.tune): train uses params.yaml", flush=True)
        return out
    # imported here: with tuning off (the default) the stage starts without torch, MLflow or Ray
    import mlflow

    from components.runtime import ray_cluster, tracking
    from components.tasks import get_task

    metric = cfg.tune.metric or f"val/{get_task(task).monitor}"
    experiment_id = tracking.setup(params, task)
    with mlflow.start_run(run_name=tracking.run_name(task, "tune"), experiment_id=experiment_id) as run:
        mlflow.set_tags({"cvops.task": task, "cvops.stage": "tune", "cvops.params_hash": params_hash(cfg)})
        mlflow.log_params({"tune.metric": metric, **{f"tune.{k}": v for k, v in cfg.tune.model_dump(exclude={"search_space", "metric"}).items()}})
        _, started_here = ray_cluster.connect(params)
        try:
            best = _search(params, task, metric, run.info.run_id, experiment_id)
        finally:
            if started_here:
                ray_cluster.shutdown()
        mlflow.log_params({f"best.{k}": v for k, v in best["best_config"].items()})
        mlflow.log_metric(tracking.metric_key(f"best/{metric}"), best["best_value"])
    out.write_text(json.dumps({"tuned": True, **best, "run_id": run.info.run_id}, indent=2))
    return out


def _search(params: Params, task: str, metric: str, parent_run_id: str, experiment_id: str) -> dict[str, Any]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from components.runtime import ray_cluster, tracking
    from components.training.tune_callbacks import MlflowTrials, OrphanPlacementGroupReaper
    from components.training.worker import storage_path, worker_config

    cfg = params.task(task).tune
    max_t = cfg.epochs or params.task(task).train.epochs
    params = params.model_copy(update={"ray": params.ray.model_copy(update={"storage_path": storage_path(params)})})
    base = apply_overrides(params.task(task), {"train.epochs": max_t})
    worker = worker_config(params, task, base, ray_cluster.use_gpu(params), run_id=None)
    trainable = tune.with_parameters(trial, worker=worker, params_json=params.model_dump_json())
    tuner = tune.Tuner(
        # 0 CPU for the trial actor, so the Train workers of a trial get the CPUs; {"cpu": 0}
        # alone is rejected ("empty head bundle"), hence a little memory
        tune.with_resources(trainable, TRIAL_RESOURCES),
        param_space=search_space(params.task(task)),
        tune_config=tune.TuneConfig(
            metric=metric, mode=cfg.mode, num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent_trials, search_alg=OptunaSearch(seed=params.seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                    grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor),
        ),
        run_config=tune.RunConfig(
            storage_path=params.ray.storage_path, name=f"{task}-tune-{parent_run_id[:8]}",
            callbacks=[MlflowTrials(tracking.tracking_uri(params), experiment_id, parent_run_id, task, max_t),
                       OrphanPlacementGroupReaper()],
        ),
    )
    started = time.monotonic()
    results = tuner.fit()
    best = results.get_best_result()
    stopped = sum(1 for r in results if (r.metrics or {}).get("training_iteration", 0) < max_t)
    print(f"tuning: {len(results)} trials ({stopped} stopped early by ASHA) in {time.monotonic() - started:.0f}s; "
          f"best {metric} {best.metrics[metric]:.4f} with {best.config}", flush=True)
    return {"best_config": best.config, "metric": metric, "mode": cfg.mode,
            "best_value": float(best.metrics[metric]), "trials": len(results), "stopped_early": stopped}
