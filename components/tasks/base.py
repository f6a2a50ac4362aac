"""The TaskSpec: everything that differs between vision tasks, in one object.

Stages, the datamodule and the Lightning module are task-agnostic: they ask the TaskSpec for
models, targets, losses, predictions, metrics and plots. Adding a task means one new file
with one TaskSpec subclass and one line in `components/tasks/__init__.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, torchvision and torchmetrics load when a method needs them, not with the task
    import numpy as np
    import torch
    from torch import nn

ModelBuilder = Callable[..., "nn.Module"]  # builder(num_classes=...) -> model, weights=None


class Lazy:
    """A model builder named by "module:attribute", imported when called: a zoo lists its
    architectures (`cvops tasks`, params validation) without importing torchvision."""

    def __init__(self, target: str, *args: Any, **kwargs: Any) -> None:
        self.target, self.args, self.kwargs = target, args, kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        module, _, attribute = self.target.partition(":")
        return getattr(import_module(module), attribute)(*self.args, *args, **self.kwargs, **kwargs)

    def __repr__(self) -> str:
        return f"Lazy({self.target!r})"


class TaskSpec(ABC):
    name: str
    #: metric (a key of `compute_metrics`) used to select checkpoints and by default gates
    monitor: str
    #: arch name -> builder; the model zoo of this task
    models: dict[str, ModelBuilder]

    # ---- data -------------------------------------------------------------------------
    @abstractmethod
    def read_records(self, root: Path) -> list[dict[str, Any]]:
        """Read the canonical on-disk format under `root`.

        Returns one dict per image with at least `path` (relative to root), `split`,
        `group` (the sensitive attribute, or "" when the dataset has none) and the task's
        annotation fields, understood by `load_target`.
        """

    @abstractmethod
    def load_target(
        self, record: dict[str, Any], root: Path, size: tuple[int, int], class_to_idx: dict[str, int]
    ) -> Any:
        """The training target of one record, as tv_tensors so that v2 transforms keep it
        aligned with the image. `size` is the (height, width) of the decoded image."""

    @abstractmethod
    def record_classes(self, record: dict[str, Any]) -> list[str]:
        """Class names annotated in one record (for the class list and the data contract)."""

    def label_summary(self, record: dict[str, Any]) -> str:
        """A short text summary of the record's annotation, for the manifest: 'cls:count;...'."""
        counts = Counter(self.record_classes(record))
        return ";".join(f"{name}:{n}" for name, n in sorted(counts.items()))

    def annotation_rows(
        self, record: dict[str, Any], root: Path, width: int | None, height: int | None
    ) -> list[dict[str, Any]]:
        """Rows of the annotation manifest for one record, checked by the data contract.

        Columns (components/data/manifest.py ANNOTATION_COLUMNS): `kind` ("label", "box",
        "mask", "mask_value"), `label`, box `x1 y1 x2 y2 area` in pixels, mask `value` and the
        annotation file's `file*` fields. `width`/`height` are the decoded image's (None when
        it does not decode). Default: one "label" row per annotated class name."""
        return [{"kind": "label", "label": name} for name in self.record_classes(record)]

    def class_names(self, declared: list[str]) -> list[str]:
        """Model output classes from the dataset's declared classes (index = class id)."""
        return list(declared)

    def target_transforms(self) -> list[Any]:
        """v2 transforms appended after augmentation to keep targets valid."""
        return []

    def collate(self, batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, Any]:
        """Stack images [N, 3, H, W]; targets stacked by default."""
        import torch

        images, targets = zip(*batch, strict=True)
        return torch.stack(images), torch.utils.data.default_collate(list(targets))

    # ---- model ------------------------------------------------------------------------
    def build_model(self, arch: str, num_classes: int, weights: str | None = None,
                    weights_path: str | None = None) -> nn.Module:
        """The model, from scratch or started from local pretrained weights (nets.load_pretrained)."""
        from components.tasks.nets import load_pretrained

        if arch not in self.models:
            raise ValueError(
                f"unknown {self.name} arch '{arch}'; choose one of: {', '.join(self.models)}"
            )
        model = self.models[arch](num_classes=num_classes)  # keyword: positional means `pretrained`
        load_pretrained(model, arch, weights, weights_path)
        return model

    def backbone_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters that transfer learning freezes or trains with a lower learning rate."""
        backbone = getattr(model, "backbone", None) or getattr(model, "features", None)
        return list(backbone.parameters()) if backbone is not None else []

    @abstractmethod
    def loss(self, model: nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """Training loss of a batch (the model is in train mode). Also the loss attacked by
        FGSM/PGD, so it must be differentiable w.r.t. `images`."""

    @abstractmethod
    def predict(self, model: nn.Module, images: torch.Tensor) -> Any:
        """Predictions for a batch (the model is in eval mode), detached, on the model's device."""

    @abstractmethod
    def format_predictions(
        self, preds: Any, classes: list[str], sizes: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """One JSON-able record per image for serving; `sizes` are the original (W, H), so
        boxes and masks come back in the input image's coordinates."""

    # ---- evaluation -------------------------------------------------------------------
    @abstractmethod
    def make_metric(self, num_classes: int) -> Any:
        """A torchmetrics Metric with update(preds, targets) and compute(); it is synced
        across Ray Train workers during validation."""

    @abstractmethod
    def summarize(self, computed: Any, classes: list[str]) -> dict[str, float]:
        """Flat {metric_name: value} from the metric's compute(); includes `self.monitor`."""

    def monitor_of_resamples(
        self, preds: Any, targets: Any, classes: list[str]
    ) -> Callable[[np.ndarray], np.ndarray]:
        """The monitored metric of multisets of the evaluated images (fairness groups and
        their bootstrap resamples): returns fn(counts) with counts [B, N] the copies of each of
        the N images in each of B multisets -> [B] values, each the metric of the predictions
        and targets of those images. Default: one task-metric computation per multiset; tasks
        whose metric derives from per-image statistics override it with one vectorised pass."""
        import numpy as np

        from components.data.batch import take

        def value(index: np.ndarray) -> float:
            metric = self.make_metric(len(classes))
            metric.update(take(preds, index), take(targets, index))
            return self.summarize(metric.compute(), classes)[self.monitor]

        def fn(counts: np.ndarray) -> np.ndarray:
            return np.array([value(np.repeat(np.arange(counts.shape[1]), row)) for row in counts])

        return fn

    def plots(
        self, metric: Any, classes: list[str], out_dir: Path
    ) -> dict[str, Path]:  # pragma: no cover - default: no task-specific plots
        """Task-specific plots of the evaluated metric state, written under out_dir."""
        return {}

    def draw(self, image: Any, record: dict[str, Any], classes: list[str], target: Any = None) -> torch.Tensor:
        """The one drawing of a prediction, for the evaluation's figure and `cvops predict`:
        `image` uint8 [3, H, W] or PIL, `record` one element of `format_predictions` in that
        image's coordinates, `target` its ground truth (a `load_target` value) when known.
        Returns uint8 [3, H', W']: panels side by side, captions on a background. Default
        (one label per image): the image under 'truth -> predicted score', green when right,
        red when wrong."""
        import components.tasks.drawing as drawing

        picture, _ = drawing.enlarged(drawing.to_pil(image))
        text = f"{record['label']} {record['score']:.2f}" if "score" in record else str(record.get("label", ""))
        if target is None:
            return drawing.row([drawing.titled(picture, text)])
        truth = classes[int(target)]
        return drawing.row([drawing.titled(picture, f"{truth} -> {text}", drawing.CORRECT if truth == record.get("label") else drawing.WRONG)])

    def draw_legend(self, classes: list[str]) -> list[tuple[str, str]]:
        """(name, colour) entries explaining `draw`'s colours, for the figure's legend."""
        import components.tasks.drawing as drawing

        return [("correct", drawing.CORRECT), ("wrong", drawing.WRONG)]

    def predicted_labels(self, preds: Any, targets: Any) -> tuple[Any, Any] | None:
        """(true labels [N], predicted labels [N]) per image for demographic parity and
        equalized odds; None (the default) when the task has no single label per image."""
        return None

    def explain(
        self, model: nn.Module, images: torch.Tensor, targets: Any, classes: list[str]
    ) -> list[dict[str, Any]] | None:
        """Saliency maps of a batch: one {"heatmap": [H, W] in [0, 1], "title": str,
        "correct": bool} per image; None (the default) when the task has none."""
        return None
