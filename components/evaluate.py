"""The evaluate stage: the trained model on the test split -> metrics JSON (DVC metrics),
plots (DVC plots), and both logged to the training's MLflow run."""

from __future__ import annotations

import json
from typing import Any

import mlflow
import torch
from PIL import Image
from tqdm import tqdm

from components import tracking
from components.config import Params
from components.data.datamodule import CVDataModule
from components.inference import load_checkpoint
from components.paths import StagePaths
from components.tasks import get_task

OVERLAY_IMAGES = 8  # test images drawn with their predictions


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data: CVDataModule, split: str = "test") -> Any:
    """Run the model over a split and return the task's metric with all batches added."""
    metric = data.spec.make_metric(len(data.classes))
    for images, targets in tqdm(data._loader(split), desc=f"evaluate {data.spec.name}", unit="batch", leave=False):
        metric.update(data.spec.predict(model, images), targets)
    return metric


@torch.no_grad()
def overlays(model: torch.nn.Module, data: CVDataModule, out: Path, count: int = OVERLAY_IMAGES) -> Path | None:
    """The task's drawing of its predictions on the first `count` test images (a fixed
    sample: split order is the dataset's), as one grid PNG; None if the task draws none."""
    from components.evaluation.overlays import save_grid, to_uint8

    dataset = data.dataset("test")
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    preds = data.spec.predict(model, images)
    drawn = [data.spec.draw_prediction(to_uint8(image), preds[i], data.classes) for i, image in enumerate(images)]
    if not drawn or drawn[0] is None:
        return None
    return save_grid(drawn, out)


def run(params: Params, task: str) -> dict[str, float]:
    cfg, paths, spec = params.task(task), StagePaths(task), get_task(task)
    model, meta = load_checkpoint(paths.model)
    data = CVDataModule(paths.data, spec, meta["image_size"], cfg.train.batch_size)
    if data.classes != meta["classes"]:
        raise ValueError(f"{paths.model} was trained on classes {meta['classes']} but {paths.data} declares {data.classes}: rerun the train stage")
    metric = evaluate_model(model, data)
    metrics = spec.summarize(metric.compute(), data.classes)
    plots = spec.plots(metric, data.classes, paths.evaluation)
    overlay = overlays(model, data, paths.evaluation / "predictions.png")

    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tracking.setup(params)
    run_id = json.loads(paths.run_info.read_text())["run_id"]
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k.replace('/', '_')}": v for k, v in metrics.items()})
        mlflow.log_artifact(str(paths.metrics), "evaluation")
        for plot in plots.values():
            mlflow.log_artifact(str(plot), "evaluation")
        if overlay is not None:  # an image artifact, shown in the run's artifact view
            mlflow.log_image(Image.open(overlay), artifact_file="evaluation/predictions.png")
    summary = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
    print(f"{task} test: {summary}  -> {paths.metrics}")
    return metrics
