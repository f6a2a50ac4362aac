"""Fairness: the task metric per sensitive group, the worst-group gap and min/max ratio with
bootstrap confidence intervals, and (where the task has labels to compare) demographic
parity and equalized odds differences.

Groups are computed by fairlearn's MetricFrame. Its y_true / y_pred are image indices and
its metric is the task's monitored metric of those images in the kept predictions
(TaskSpec.monitor_of_resamples), so the same code serves accuracy, mAP and mIoU; the
bootstrap resamples are measured in one vectorised call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fairlearn.metrics import MetricFrame, demographic_parity_difference, equalized_odds_difference

from components.tasks.base import TaskSpec


def _metric_fn(of_counts, n: int):
    """metric(y_true=image indices, y_pred=same indices) -> the monitored metric of those images."""
    def fn(y_true, y_pred) -> float:
        return float(of_counts(np.bincount(np.asarray(y_true, dtype=np.int64), minlength=n)[None])[0])
    return fn


def _bootstrap(of_counts, groups: np.ndarray, names: list[str], samples: int, seed: int) -> np.ndarray:
    """[samples, len(names)] metric values with images resampled within each group, all
    resamples measured in one call (counts: copies of each image per resample)."""
    rng = np.random.default_rng(seed)
    members = {g: np.flatnonzero(groups == g) for g in names}
    counts = np.zeros((samples, len(names), len(groups)), dtype=np.int32)
    for b in range(samples):
        for j, g in enumerate(names):
            counts[b, j] = np.bincount(rng.choice(members[g], size=len(members[g]), replace=True), minlength=len(groups))
    return of_counts(counts.reshape(samples * len(names), len(groups))).reshape(samples, len(names))


def label_parity(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Demographic parity and equalized odds differences, one-vs-rest per class, worst class
    (for two classes this equals fairlearn's binary value)."""
    classes = np.unique(np.concatenate([y_true, y_pred]))
    dp = [demographic_parity_difference(y_true == c, y_pred == c, sensitive_features=groups) for c in classes]
    eo = [equalized_odds_difference(y_true == c, y_pred == c, sensitive_features=groups) for c in classes]
    return {"demographic_parity_difference": float(np.nanmax(dp)), "equalized_odds_difference": float(np.nanmax(eo))}


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def fairness_report(
    spec: TaskSpec, classes: list[str], preds: Any, targets: Any, groups: list[str],
    bootstrap_samples: int, min_group_size: int, seed: int,
) -> dict[str, Any]:
    """Per-group metric table (with too-small groups listed as such), gap, ratio, 95% CIs.

    `groups[i]` is the sensitive attribute of image i ("" when the dataset has none)."""
    groups_arr = np.asarray(groups, dtype=object)
    names, counts = np.unique(groups_arr, return_counts=True)
    report: dict[str, Any] = {"metric": spec.monitor, "groups": []}
    if len(names) == 1 and names[0] == "":
        return report | {"status": "no_sensitive_attribute"}
    of_counts = spec.monitor_of_resamples(preds, targets, classes)
    fn = _metric_fn(of_counts, len(groups_arr))
    measured = [str(g) for g, n in zip(names, counts, strict=True) if n >= min_group_size]
    rows = [{"group": str(g), "n": int(n), "status": "too_small", "value": None, "ci": None} for g, n in zip(names, counts, strict=True)]
    if not measured:
        return report | {"groups": rows, "status": "no_group_large_enough"}
    keep = np.isin(groups_arr, measured)
    index = np.flatnonzero(keep)
    frame = MetricFrame(metrics=fn, y_true=index, y_pred=index, sensitive_features=groups_arr[keep])
    boot = _bootstrap(of_counts, groups_arr, measured, bootstrap_samples, seed)
    for row in rows:
        if row["group"] in measured:
            j = measured.index(row["group"])
            row |= {"status": "ok", "value": float(frame.by_group[row["group"]]), "ci": _interval(boot[:, j])}
    report |= {"groups": rows, "overall": float(frame.overall)}
    if len(measured) < 2:
        return report | {"status": "fewer_than_two_measurable_groups"}
    gaps, ratios = boot.max(1) - boot.min(1), boot.min(1) / np.maximum(boot.max(1), 1e-12)
    worst = measured[int(np.argmin([frame.by_group[g] for g in measured]))]
    report |= {
        "status": "ok", "worst_group": worst,
        "worst_group_gap": float(frame.difference(method="between_groups")), "worst_group_gap_ci": _interval(gaps),
        "min_max_ratio": float(frame.ratio(method="between_groups")), "min_max_ratio_ci": _interval(ratios),
    }
    labels = spec.predicted_labels(preds, targets)
    if labels is not None:
        y_true, y_pred = (np.asarray(a)[keep] for a in labels)
        report |= label_parity(y_true, y_pred, groups_arr[keep])
    return report


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The keys the promotion gate reads: fairness/worst_group_gap, fairness/min_max_ratio, ..."""
    out = {f"fairness/{report['metric']}/{r['group']}": r["value"] for r in report["groups"] if r["value"] is not None}
    if report.get("status") == "ok":
        out["fairness/worst_group_gap"] = report["worst_group_gap"]
        out["fairness/worst_group_gap_ci_high"] = report["worst_group_gap_ci"][1]
        out["fairness/min_max_ratio"] = report["min_max_ratio"]
        out["fairness/min_max_ratio_ci_low"] = report["min_max_ratio_ci"][0]
        for key in ("demographic_parity_difference", "equalized_odds_difference"):
            if key in report:
                out[f"fairness/{key}"] = report[key]
    return out
