"""The evaluate stage: the trained model on the test split -> metrics JSON (DVC metrics),
plots (DVC plots), and both logged to the training's MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
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


def test_metrics(model: torch.nn.Module, meta: dict[str, Any], data_dir: Path, batch_size: int,
                 source: str = "the model") -> tuple[dict[str, float], Any, CVDataModule]:
    """Flat metrics of a model on the test split of `data_dir` (the gate re-evaluates the
    champion with this too), with the metric state and the data for plots."""
    spec = get_task(meta["task"])
    data = CVDataModule(data_dir, spec, meta["image_size"], batch_size)
    if data.classes != meta["classes"]:
        raise ValueError(f"{source} was trained on classes {meta['classes']} but {data_dir} declares {data.classes}: rerun the train stage")
    metric = evaluate_model(model, data)
    return spec.summarize(metric.compute(), data.classes), metric, data


def run(params: Params, task: str) -> dict[str, float]:
    cfg, paths, spec = params.task(task), StagePaths(task), get_task(task)
    model, meta = load_checkpoint(paths.model)
    metrics, metric, data = test_metrics(model, meta, paths.data, cfg.train.batch_size, str(paths.model))
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
