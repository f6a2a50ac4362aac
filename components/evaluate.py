"""The evaluate stage: the trained model on the test split -> metrics JSON (DVC metrics),
plots (DVC plots), and both logged to the training's MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
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


def metrics_on_test_split(model: torch.nn.Module, meta: dict[str, Any], data_dir: Path, batch_size: int,
                 source: str = "the model") -> tuple[dict[str, float], Any, CVDataModule]:
    """Flat metrics of a model on the test split of `data_dir` (the gate re-evaluates the
    champion with this too), with the metric state and the data for plots."""
    spec = get_task(meta["task"])
    data = CVDataModule(data_dir, spec, meta["image_size"], batch_size)
    if data.classes != meta["classes"]:
        raise ValueError(f"{source} was trained on classes {meta['classes']} but {data_dir} declares {data.classes}: rerun the train stage")
    metric = evaluate_model(model, data)
    return spec.summarize(metric.compute(), data.classes), metric, data


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
    metrics, metric, data = metrics_on_test_split(model, meta, paths.data, cfg.train.batch_size, str(paths.model))
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
