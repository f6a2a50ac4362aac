"""The evaluate stage: the trained model on the test split -> task metrics, fairness,
robustness (corruptions, adversarial), explanations and a model card.

Writes reports/<task>/metrics.json (flat, a DVC metric the gate reads), plot images and plot
data under reports/<task>/evaluation/ (DVC plots), the card under reports/<task>/card/, and
logs all of it to the training's MLflow run. The model runs once per clean / corrupted /
attacked pass; fairness and bootstraps reuse the kept per-image predictions.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import mlflow
from tqdm import tqdm

from components import tracking
from components.config import Params
from components.data.datamodule import CVDataModule
from components.evaluation import adversarial, card, corruptions, fairness, plots
from components.evaluation.explain import explanation_grid
from components.evaluation.predictions import predict_all
from components.inference import load_checkpoint
from components.paths import StagePaths
from components.registry.lineage import data_hash
from components.tasks import get_task


def mlflow_key(key: str) -> str:
    """MLflow metric names allow [\\w.\\- :/]; '/' and '@' become '_' (as before: test_<key>)."""
    return "test_" + re.sub(r"[^\w.\- :]", "_", key)


def champion_errors(params: Params, task: str, names: list[str]) -> dict[str, float]:
    """Per-corruption errors the current @champion logged when it was evaluated ({} if none)."""
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(f"{params.tracking.model_prefix}{task}", "champion")
    except mlflow.exceptions.MlflowException:
        return {}
    logged = client.get_run(version.run_id).data.metrics
    keys = {n: mlflow_key(f"robustness/{n}_error") for n in names}
    return {n: logged[k] for n, k in keys.items() if k in logged}


def run_suite(params: Params, task: str, model, data: CVDataModule) -> dict[str, Any]:
    """Everything measured on the test split, as one JSON-able dict (the card's content)."""
    cfg, spec, ev = params.task(task), data.spec, params.task(task).evaluate
    model.eval()  # predictions in eval mode; attacks switch modes themselves and restore this
    test = data.dataset("test")
    samples, groups = [test[i] for i in range(len(test))], [r["group"] for r in test.records]
    bs, classes = cfg.train.batch_size, data.classes
    corruptions.check_names(list(ev.corruptions))
    with tqdm(total=1 + sum(map(len, ev.corruptions.values())) + 2 * len(ev.eps), desc=f"evaluate {task}", unit="pass") as bar:
        preds, targets = predict_all(spec, model, samples, bs)
        bar.update()
        metric = spec.make_metric(len(classes))
        metric.update(preds, targets)
        metrics = spec.summarize(metric.compute(), classes)
        clean = metrics[spec.monitor]
        fair = fairness.fairness_report(spec, classes, preds, targets, groups, ev.bootstrap_samples, ev.min_group_size, params.seed)
        robust = corruptions.corruption_report(spec, model, classes, samples, ev.corruptions, clean, bs, params.seed, bar)
        adv = adversarial.adversarial_report(spec, model, classes, samples, ev.eps, ev.pgd_steps, ev.pgd_step_size, clean, bs, params.seed, bar)
    champion = champion_errors(params, task, list(ev.corruptions))
    robust["mce"] = corruptions.mce(robust["errors"], champion)
    flat = {**metrics, **fairness.flat_metrics(fair), **adversarial.flat_metrics(adv), **corruptions.flat_metrics(robust, champion)}
    return {"metric_state": metric, "samples": samples, "metrics": flat, "fairness": fair, "corruptions": robust, "adversarial": adv}


def write_plots(task: str, data: CVDataModule, model, suite: dict[str, Any], params: Params) -> dict[str, str]:
    """Images and plot data (JSON lists for `dvc plots show`) under reports/<task>/evaluation."""
    out, spec = StagePaths(task).evaluation, data.spec
    paths = dict(spec.plots(suite["metric_state"], data.classes, out))
    paths["corruptions"] = plots.corruption_plot(suite["corruptions"], out / "corruptions.png")
    paths["adversarial"] = plots.adversarial_plot(suite["adversarial"], out / "adversarial.png")
    if any(r["value"] is not None for r in suite["fairness"]["groups"]):
        paths["fairness"] = plots.fairness_plot(suite["fairness"], out / "fairness.png")
    grid = explanation_grid(spec, model, suite["samples"], data.classes, params.task(task).evaluate.explain_samples, out / "explanations.png")
    if grid is not None:
        paths["explanations"] = grid
    (out / "adversarial.json").write_text(json.dumps(adversarial.curve_rows(suite["adversarial"]), indent=1))
    (out / "corruptions.json").write_text(json.dumps(suite["corruptions"]["rows"], indent=1))
    (out / "fairness.json").write_text(json.dumps([{"group": r["group"], "n": r["n"], "value": r["value"]} for r in suite["fairness"]["groups"]], indent=1))
    return {name: str(p) for name, p in paths.items()}


def run(params: Params, task: str) -> dict[str, float]:
    cfg, paths, spec = params.task(task), StagePaths(task), get_task(task)
    model, meta = load_checkpoint(paths.model)
    data = CVDataModule(paths.data, spec, meta["image_size"], cfg.train.batch_size)
    if data.classes != meta["classes"]:
        raise ValueError(f"{paths.model} was trained on classes {meta['classes']} but {paths.data} declares {data.classes}: rerun the train stage")
    tracking.setup(params)
    suite = run_suite(params, task, model, data)
    metrics = suite["metrics"]
    plot_paths = write_plots(task, data, model, suite, params)
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
        "fairness": suite["fairness"], "corruptions": suite["corruptions"],
        "adversarial": {"metric": spec.monitor, "rows": adversarial.curve_rows(suite["adversarial"])},
        "plots": plot_paths, "verdict": None,
    }, indent=2))
    card_files = card.write_card(card_json)
    run_id = json.loads(paths.run_info.read_text())["run_id"]
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({mlflow_key(k): v for k, v in metrics.items()})
        for path in [paths.metrics, *plot_paths.values(), card_json, *card_files]:
            mlflow.log_artifact(str(path), "evaluation")
    summary = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
    print(f"{task} test: {summary}  -> {paths.metrics}, {card_files[1]}")
    return metrics
