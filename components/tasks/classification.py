"""Image classification: one label per image.

On disk: `labels.csv` (path, label, split, group) next to the images, or ImageFolder
(`<split>/<class>/<image>`). Target: class index (int). Prediction: probabilities [N, C].
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.tasks import MONITORS
from components.tasks.base import Lazy, TaskSpec

if TYPE_CHECKING:  # imported by the methods that use them: the module loads without torch
    import torch
    import torchmetrics
    from torch import nn

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _read_imagefolder(root: Path) -> list[dict[str, Any]]:
    return [
        {"path": str(p.relative_to(root)), "label": p.parent.name, "split": p.parent.parent.name, "group": ""}
        for p in sorted(root.glob("*/*/*"))
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]


class ClassificationTask(TaskSpec):
    name = "classification"
    monitor = MONITORS["classification"]
    models = {
        "small_cnn": Lazy("components.tasks.nets:SmallCNN"),
        "resnet18": Lazy("torchvision.models:resnet18", weights=None),
        "resnet34": Lazy("torchvision.models:resnet34", weights=None),
        "resnet50": Lazy("torchvision.models:resnet50", weights=None),
        "mobilenet_v3_small": Lazy("torchvision.models:mobilenet_v3_small", weights=None),
        "mobilenet_v3_large": Lazy("torchvision.models:mobilenet_v3_large", weights=None),
        "efficientnet_b0": Lazy("torchvision.models:efficientnet_b0", weights=None),
    }

    def read_records(self, root: Path) -> list[dict[str, Any]]:
        labels = root / "labels.csv"
        if not labels.exists():
            return _read_imagefolder(root)
        with labels.open(newline="") as f:
            return [
                {"path": r["path"], "label": r["label"], "split": r["split"], "group": r.get("group") or ""}
                for r in csv.DictReader(f)
            ]

    def record_classes(self, record: dict[str, Any]) -> list[str]:
        return [record["label"]]

    def load_target(self, record, root, size, class_to_idx) -> int:
        return class_to_idx[record["label"]]

    def backbone_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        head = getattr(model, "fc", None) or getattr(model, "classifier", None)
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        return [p for p in model.parameters() if id(p) not in head_ids]

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(model(images), targets)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images).softmax(dim=1).detach()

    def format_predictions(self, preds, classes, sizes):
        return [
            {"label": classes[int(p.argmax())], "score": float(p.max()), "probabilities": dict(zip(classes, p.tolist(), strict=True))}
            for p in preds.cpu()
        ]

    def make_metric(self, num_classes: int) -> torchmetrics.MetricCollection:
        import torchmetrics

        kw = {"num_classes": num_classes}
        return torchmetrics.MetricCollection(
            {
                "accuracy": torchmetrics.classification.MulticlassAccuracy(average="micro", **kw),
                "macro_f1": torchmetrics.classification.MulticlassF1Score(average="macro", **kw),
                "ece": torchmetrics.classification.MulticlassCalibrationError(n_bins=15, **kw),
                "confusion": torchmetrics.classification.MulticlassConfusionMatrix(**kw),
            }
        )

    def summarize(self, computed: dict[str, torch.Tensor], classes: list[str]) -> dict[str, float]:
        confusion = computed["confusion"].float()
        recall = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
        out = {k: float(v) for k, v in computed.items() if k != "confusion"}
        out.update({f"recall/{name}": float(r) for name, r in zip(classes, recall, strict=True)})
        return out

    def monitor_of_resamples(self, preds, targets, classes):
        """Accuracy of multisets of images: their correct copies / their copies."""
        import numpy as np

        correct = (preds.argmax(dim=1) == targets).double().cpu().numpy()
        return lambda counts: (counts @ correct) / np.maximum(counts.sum(axis=1), 1)

    def plots(self, metric, classes, out_dir):
        from components.evaluation.plots import confusion_matrix_plot

        confusion = metric["confusion"].compute()
        return {"confusion_matrix": confusion_matrix_plot(confusion, classes, out_dir / "confusion_matrix.png")}

    def predicted_labels(self, preds, targets):
        return targets.cpu().numpy(), preds.argmax(dim=1).cpu().numpy()

    def explain(self, model, images, targets, classes):
        from components.evaluation.explain import grad_cam

        heatmaps, predicted = grad_cam(model, images)
        return [
            {"heatmap": h, "title": f"{classes[int(t)]} -> {classes[int(p)]}", "correct": bool(t == p)}
            for h, t, p in zip(heatmaps, targets, predicted, strict=True)
        ]


SPEC = ClassificationTask()
