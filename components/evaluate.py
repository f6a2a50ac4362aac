"""The evaluate stage: the trained model on the test split -> metrics JSON (DVC metrics),
plots (DVC plots), and both logged to the training's MLflow run."""

from __future__ import annotations

import json
from typing import Any

import mlflow
import torch
from tqdm import tqdm

from components import tracking
from components.config import Params
from components.data.datamodule import CVDataModule
from components.inference import load_checkpoint
from components.paths import StagePaths
from components.tasks import get_task


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data: CVDataModule, split: str = "test") -> Any:
    """Run the model over a split and return the task's metric with all batches added."""
    metric = data.spec.make_metric(len(data.classes))
    for images, targets in tqdm(data._loader(split), desc=f"evaluate {data.spec.name}", unit="batch", leave=False):
        metric.update(data.spec.predict(model, images), targets)
    return metric


def run(params: Params, task: str) -> dict[str, float]:
    cfg, paths, spec = params.task(task), StagePaths(task), get_task(task)
    model, meta = load_checkpoint(paths.model)
    data = CVDataModule(paths.data, spec, meta["image_size"], cfg.train.batch_size)
    if data.classes != meta["classes"]:
        raise ValueError(f"{paths.model} was trained on classes {meta['classes']} but {paths.data} declares {data.classes}: rerun the train stage")
    metric = evaluate_model(model, data)
    metrics = spec.summarize(metric.compute(), data.classes)
    plots = spec.plots(metric, data.classes, paths.evaluation)

    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tracking.setup(params)
    run_id = json.loads(paths.run_info.read_text())["run_id"]
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k.replace('/', '_')}": v for k, v in metrics.items()})
        mlflow.log_artifact(str(paths.metrics), "evaluation")
        for plot in plots.values():
            mlflow.log_artifact(str(plot), "evaluation")
    summary = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
    print(f"{task} test: {summary}  -> {paths.metrics}")
    return metrics
