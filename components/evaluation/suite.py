"""The evaluation suite of one model on the test split: task metrics, fairness, robustness
(corruptions, adversarial), plots and the prediction grid. The evaluate stage runs it on the
candidate; the gate may run it on the champion, so both are measured by the same code.

The model runs once over the clean split and once per corrupted / attacked copy of the
robustness subsample (every eps of an attack in one batch); fairness, bootstraps and the
subsample's clean metric reuse the kept per-image predictions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from tqdm import tqdm

from components.config import Params
from components.data.datamodule import CVDataModule
from components.evaluation import adversarial, corruptions, distributed, fairness, plots
from components.evaluation.explain import explanation_grid
from components.evaluation.predictions import (
    channels_last,
    concat,
    monitor_value,
    predict_all,
    take,
)
from components.paths import StagePaths
from components.runtime import tracking
from components.tasks import get_task

OVERLAY_IMAGES = 8  # test images drawn with their predictions


def champion_errors(params: Params, task: str, names: list[str]) -> dict[str, float]:
    """Per-corruption errors the current @champion logged when it was evaluated ({} if none)."""
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(f"{params.tracking.model_prefix}{task}", "champion")
    except mlflow.exceptions.MlflowException:
        return {}
    logged = client.get_run(version.run_id).data.metrics
    keys = {n: tracking.metric_key(f"robustness/{n}_error", "test") for n in names}
    return {n: logged[k] for n, k in keys.items() if k in logged}


def robustness_indices(images: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded subsample of the test split for the corruption and attack passes (each
    costs one or more clean passes). size 0 (or >= the split) keeps every image."""
    if size and size < images:
        return sorted(torch.randperm(images, generator=torch.Generator().manual_seed(seed))[:size].tolist())
    return list(range(images))


def suite_passes(ev, test_images: int) -> int:
    """Image passes through the model in the suite (the progress bar's total): the clean
    split, then on the robustness subsample each corruption level, and per eps one FGSM
    prediction (after one gradient for all eps) and PGD's steps plus its prediction."""
    subset = min(ev.robustness_images or test_images, test_images)
    attacked = 1 + len(ev.eps) * (ev.pgd_steps + 2) if ev.eps else 0
    return test_images + subset * (sum(map(len, ev.corruptions.values())) + attacked)


def run_suite(params: Params, task: str, model, data: CVDataModule) -> dict[str, Any]:
    """Everything measured on the test split, as one JSON-able dict (the card's content).

    The model passes (clean split, corruptions x severities, attack batches) are one grid of
    independent units (components/evaluation/distributed.py), run here or on
    `evaluate.workers` Ray workers with the same numbers; fairness, bootstraps and the
    subsample's clean metric reuse the kept per-image predictions."""
    cfg, spec, ev = params.task(task), data.spec, params.task(task).evaluate
    model.eval()  # predictions in eval mode; attacks switch modes themselves and restore this
    channels_last(model)
    test = data.dataset("test")
    samples, groups = [test[i] for i in range(len(test))], [r["group"] for r in test.records]
    bs, classes = cfg.train.batch_size, data.classes
    corruptions.check_names(list(ev.corruptions))
    keep = robustness_indices(len(samples), ev.robustness_images, params.seed)
    grid = distributed.Grid(task, classes, keep, ev.corruptions, ev.eps, ev.pgd_steps, ev.pgd_step_size, bs, params.seed)
    # not a terminal (DVC under Prefect streams it into the flow's log): an update every 30 s, not dozens
    interval = 0.1 if sys.stderr.isatty() else 30.0
    with tqdm(total=suite_passes(ev, len(samples)), desc=f"evaluate {task}", unit="img-pass", mininterval=interval) as bar:
        results = _run_grid(params, ev.workers, grid, model, samples, bar)
    clean_parts, values, attack_batches = distributed.split_results(grid, grid.units(len(samples)), results)
    preds, targets = concat([p for p, _ in clean_parts]), concat([t for _, t in clean_parts])
    metric = spec.make_metric(len(classes))
    metric.update(preds, targets)
    metrics = spec.summarize(metric.compute(), classes)
    fair = fairness.fairness_report(spec, classes, preds, targets, groups, ev.bootstrap_samples, ev.min_group_size, params.seed)
    clean = monitor_value(spec, classes, take(preds, keep), take(targets, keep))
    robust = corruptions.summarize(spec, ev.corruptions, values, clean)
    adv = adversarial.attack_curves(spec, classes, attack_batches, ev.eps, clean)
    champion = champion_errors(params, task, list(ev.corruptions))
    robust["mce"] = corruptions.mce(robust["errors"], champion)
    flat = {**metrics, **fairness.flat_metrics(fair), **adversarial.flat_metrics(adv), **corruptions.flat_metrics(robust, champion)}
    return {"metric_state": metric, "samples": samples, "preds": preds, "targets": targets, "metrics": flat, "fairness": fair, "corruptions": robust, "adversarial": adv}


def _run_grid(params: Params, workers: int, grid, model, samples: list, bar) -> list[Any]:
    """The grid in this process (workers 0), or on Ray workers of the stage's cluster
    (RAY_ADDRESS / ray.address, else a local one for the duration of the suite)."""
    if workers <= 0:
        return distributed.run_grid(grid, model, samples, 0, progress=bar)
    from components.runtime import ray_cluster

    _, started_here = ray_cluster.connect(params)
    try:
        return distributed.run_grid(grid, model, samples, workers, params.ray.cpus_per_worker, bar)
    finally:
        if started_here:
            ray_cluster.shutdown()


def write_plots(task: str, data: CVDataModule, model, suite: dict[str, Any], params: Params) -> dict[str, str]:
    """Images under reports/<task>/evaluation; their data for `dvc plots` in write_curves."""
    out, spec = StagePaths(task).evaluation, data.spec
    paths = dict(spec.plots(suite["metric_state"], data.classes, out))
    paths["corruptions"] = plots.corruption_plot(suite["corruptions"], out / "corruptions.png")
    paths["adversarial"] = plots.adversarial_plot(suite["adversarial"], out / "adversarial.png")
    if any(r["value"] is not None for r in suite["fairness"]["groups"]):
        paths["fairness"] = plots.fairness_plot(suite["fairness"], out / "fairness.png")
    grid = explanation_grid(spec, model, suite["samples"], data.classes, params.task(task).evaluate.explain_samples, out / "explanations.png")
    if grid is not None:
        paths["explanations"] = grid
    write_curves(StagePaths(task).curves, suite)
    return {name: str(p) for name, p in paths.items()}


def write_curves(out: Path, suite: dict[str, Any]) -> None:
    """One series per JSON file, as dvc.yaml's evaluate plots declare them (x, y): the test
    metric vs eps per attack, vs severity (mean over corruptions; 0 is clean), per group.
    `dvc plots diff A B` overlays them across revisions and experiments."""
    out.mkdir(parents=True, exist_ok=True)
    corruption, rows = suite["corruptions"], suite["corruptions"]["rows"]
    curves = {f"{attack}.json": [{"eps": eps, "value": v} for eps, v in sorted(curve.items())]
              for attack, curve in suite["adversarial"]["curves"].items()}
    severities = sorted({r["severity"] for r in rows})
    curves["corruption_severity.json"] = [{"severity": 0, "value": corruption["clean"]}] + [
        {"severity": s, "value": sum(r["value"] for r in rows if r["severity"] == s) / sum(r["severity"] == s for r in rows)}
        for s in severities]
    curves["groups.json"] = [{"group": r["group"], "value": r["value"]} for r in suite["fairness"]["groups"] if r["value"] is not None]
    for name, data in curves.items():
        (out / name).write_text(json.dumps(data, indent=1))


def load_test_split(meta: dict[str, Any], data_dir: Path, batch_size: int, source: str) -> CVDataModule:
    """The dataset a checkpoint is evaluated on; its classes must be the ones it learned."""
    data = CVDataModule(data_dir, get_task(meta["task"]), meta["image_size"], batch_size)
    if data.classes != meta["classes"]:
        raise ValueError(f"{source} was trained on classes {meta['classes']} but {data_dir} declares {data.classes}: rerun the train stage")
    return data


def metrics_on_test_split(model: torch.nn.Module, meta: dict[str, Any], data_dir: Path, batch_size: int,
                          source: str = "the model") -> dict[str, float]:
    """The task metrics of a model on the test split (the gate re-evaluates the champion
    with this, so candidate and champion are measured by the same code on the same data)."""
    data = load_test_split(meta, data_dir, batch_size, source)
    test = data.dataset("test")
    preds, targets = predict_all(data.spec, model, [test[i] for i in range(len(test))], batch_size)
    metric = data.spec.make_metric(len(data.classes))
    metric.update(preds, targets)
    return data.spec.summarize(metric.compute(), data.classes)


def worst_images(spec, classes: list[str], preds: Any, targets: Any, count: int) -> list[int]:
    """Indices of the `count` test images of lowest task metric (the monitored one, of each
    image alone: TaskSpec.monitor_of_resamples with one copy of one image), worst first;
    images where it is undefined (no ground truth: NaN or -1) come last."""
    n = len(targets)
    per_image = np.asarray(spec.monitor_of_resamples(preds, targets, classes)(np.eye(n, dtype=np.int64)), dtype=np.float64)
    per_image = np.where(np.isnan(per_image) | (per_image < 0), np.inf, per_image)
    return np.argsort(per_image, kind="stable")[:count].tolist()


def overlays(data: CVDataModule, suite: dict[str, Any], out: Path, count: int = OVERLAY_IMAGES) -> Path:
    """The worst `count` test images by the task metric, each drawn by the task (image |
    ground truth | prediction [| errors]), one per row, with the legend: predictions.png."""
    from components.serving.selection import operating_point, select
    from components.tasks.drawing import save_figure, to_uint8

    spec, classes = data.spec, data.classes
    picks = worst_images(spec, classes, suite["preds"], suite["targets"], count)
    rows = []
    for i in picks:
        image, target = suite["samples"][i]
        size = (image.shape[-1], image.shape[-2])
        record = spec.format_predictions(take(suite["preds"], [i]), classes, [size])[0]
        record = select(record, **operating_point(spec.name))
        rows.append(spec.draw(to_uint8(image), record, classes, target))
    title = f"{len(picks)} worst test images by {spec.monitor}, worst first:"
    return save_figure(rows, out, spec.draw_legend(classes), title)


# ---- for the promotion gate: the champion measured as the candidate is ----------------------

def split_predictions(model: torch.nn.Module, data: CVDataModule, batch_size: int) -> tuple[Any, Any]:
    """(per-image predictions, targets) of a model on the test split, in split order."""
    test = data.dataset("test")
    return predict_all(data.spec, model, [test[i] for i in range(len(test))], batch_size)


def paired_bootstrap(spec, classes: list[str], candidate: Any, champion: Any, targets: Any,
                     samples: int, confidence: float, seed: int) -> dict[str, float]:
    """The monitored metric's difference candidate - champion on the same test images, with
    a percentile interval over `samples` resamples of the images: each resample counts the
    same images for both models (paired), so what the two models share cancels out.

    By hand because the resamples must be the same multisets for both models and the task's
    `monitor_of_resamples` already measures B multisets in one vectorised call."""
    import numpy as np

    n = len(targets)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=samples)
    ones = np.ones((1, n), dtype=np.int64)
    of_candidate = spec.monitor_of_resamples(candidate, targets, classes)
    of_champion = spec.monitor_of_resamples(champion, targets, classes)
    diff = of_candidate(counts) - of_champion(counts)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    return {"difference": float(of_candidate(ones)[0] - of_champion(ones)[0]), "low": float(low), "high": float(high),
            "samples": samples, "confidence": confidence, "images": n}
