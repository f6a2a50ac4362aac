"""The evaluate stage: the trained model on the test split -> task metrics, fairness,
robustness (corruptions, adversarial), explanations and a model card.

Writes reports/<task>/metrics.json (flat, a DVC metric the gate reads), plot images and plot
data under reports/<task>/evaluation/ (DVC plots), the card under reports/<task>/card/, and
logs all of it to the training's MLflow run. The model runs once over the clean split and
once per corrupted / attacked copy of the robustness subsample (every eps of an attack in
one batch); fairness, bootstraps and the subsample's clean metric reuse the kept per-image
predictions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from PIL import Image

from components.config import Params
from components.evaluation import adversarial, card
from components.evaluation.suite import load_test_split, overlays, run_suite, write_plots
from components.paths import StagePaths
from components.registry.lineage import data_hash
from components.runtime import tracking
from components.serving.checkpoint import load_checkpoint
from components.tasks import get_task


def run(params: Params, task: str) -> dict[str, float]:
    cfg, paths, spec = params.task(task), StagePaths(task), get_task(task)
    run_id = tracking.training_run(params, paths.run_info)  # before the work: the results are logged to it
    model, meta = load_checkpoint(paths.model)
    data = load_test_split(meta, paths.data, cfg.train.batch_size, str(paths.model))
    tracking.setup(params, task)
    suite = run_suite(params, task, model, data)
    metrics = suite["metrics"]
    plot_paths = write_plots(task, data, model, suite, params)
    plot_paths["predictions"] = str(overlays(data, suite, paths.evaluation / "predictions.png"))
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    card_json = paths.metrics.parent / "card" / "card.json"
    card_json.parent.mkdir(parents=True, exist_ok=True)
    card_json.write_text(json.dumps({
        "model_name": f"{params.tracking.model_prefix}{task}", "task": task, "arch": meta["arch"], "classes": data.classes,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"path": str(paths.data), "version": data_hash(f"prepare@{task}", str(paths.data)), "test_images": len(suite["samples"])},
        "config": {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")},
        "metrics": {k: v for k, v in metrics.items() if "/" not in k},
        "per_class": card.per_class(metrics, data.classes),
        "fairness": suite["fairness"], "corruptions": suite["corruptions"],
        "adversarial": {"metric": spec.monitor, "rows": adversarial.curve_rows(suite["adversarial"])},
        "plots": plot_paths, "verdict": None,
    }, indent=2))
    card_files = card.write_card(card_json)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({tracking.metric_key(k, "test"): v for k, v in metrics.items()})
        for path in [paths.metrics, card_json, *card_files]:
            mlflow.log_artifact(str(path), "evaluation")
        for path in plot_paths.values():  # image artifacts, shown in the run's artifact view
            if str(path).endswith(".png"):
                mlflow.log_image(Image.open(path), artifact_file=f"evaluation/{Path(path).name}")
    summary = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
    print(f"{task} test: {summary}  -> {paths.metrics}, {card_files[1]}")
    return metrics
