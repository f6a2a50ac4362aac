"""Semantic segmentation: one class per pixel.

On disk: `images/` + `masks/` PNGs of class indices (0 = background, 255 = ignore) +
`labels.csv` (path, split, group, mask); classes in dataset.json (without background).
Record: {"path", "split", "group", "mask"}. Target: tv_tensors.Mask int64 [H, W].
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.safepath import ESCAPES, inside_root
from components.tasks import MONITORS
from components.tasks.base import Lazy, TaskSpec

if TYPE_CHECKING:  # imported by the functions that use them: the module loads without torch
    import numpy as np
    import torch
    import torchmetrics
    from torch import nn
    from torchvision import tv_tensors

IGNORE_INDEX = 255


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] logits; torchvision's segmentation models return {"out": ...}."""
    out = model(images)
    return out["out"] if isinstance(out, dict) else out


def iou_and_dice(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU and Dice [..., C] from confusion matrices [..., C, C] (true class per
    row); NaN for a class absent from both prediction and target, so means skip it."""
    import torch

    confusion = confusion.double()
    tp = confusion.diagonal(dim1=-2, dim2=-1)
    fp, fn = confusion.sum(dim=-2) - tp, confusion.sum(dim=-1) - tp
    union = tp + fp + fn
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), nan)
    return iou, dice


class SegmentationTask(TaskSpec):
    name = "segmentation"
    monitor = MONITORS["segmentation"]
    models = {
        "unet_small": Lazy("components.tasks.nets:SmallUNet"),
        "lraspp_mobilenet_v3_large": Lazy("torchvision.models.segmentation:lraspp_mobilenet_v3_large", weights=None,
                                          weights_backbone=None),
        "deeplabv3_mobilenet_v3_large": Lazy("torchvision.models.segmentation:deeplabv3_mobilenet_v3_large", weights=None,
                                             weights_backbone=None, aux_loss=False),
        "fcn_resnet50": Lazy("torchvision.models.segmentation:fcn_resnet50", weights=None, weights_backbone=None,
                             aux_loss=False),
    }

    # ---- reading and targets

    def read_records(self, root: Path) -> list[dict[str, Any]]:
        with (root / "labels.csv").open(newline="") as f:
            return [
                {"path": r["path"], "split": r["split"], "group": r.get("group") or "", "mask": r["mask"]}
                for r in csv.DictReader(f)
            ]

    def record_classes(self, record: dict[str, Any]) -> list[str]:
        return []  # per-pixel classes are read from the mask by the data contract, not here

    def class_names(self, declared: list[str]) -> list[str]:
        return ["background", *declared]

    def annotation_rows(self, record, root, width, height) -> list[dict[str, Any]]:
        """One "mask" row (file, PIL mode, size) and one "mask_value" row per distinct value
        in the mask; the value indexes class_names() (0 = background) or is IGNORE_INDEX."""
        import numpy as np
        from PIL import Image

        row: dict[str, Any] = {"kind": "mask", "file": record["mask"], "file_in_root": False, "file_readable": False}
        path = inside_root(root, record["mask"])
        if path is None:
            return [{**row, "file_error": ESCAPES}]
        try:
            with Image.open(path) as mask:
                values = np.unique(np.asarray(mask))  # decodes the whole mask: truncation fails here
                row.update(file_mode=mask.mode, file_width=mask.width, file_height=mask.height)
        except (OSError, ValueError) as exc:
            return [{**row, "file_in_root": True, "file_error": f"{type(exc).__name__}: {exc}"[:200]}]
        row.update(file_in_root=True, file_readable=True)
        return [row, *({"kind": "mask_value", "value": int(v)} for v in values)]

    def load_target(self, record, root, size, class_to_idx) -> tv_tensors.Mask:
        import numpy as np
        import torch
        from PIL import Image
        from torchvision import tv_tensors

        with Image.open(root / record["mask"]) as mask:
            return tv_tensors.Mask(torch.from_numpy(np.array(mask, dtype=np.int64)))

    def collate(self, batch):
        import torch

        images, masks = zip(*batch, strict=True)
        return torch.stack(images), torch.stack([torch.as_tensor(m) for m in masks])

    # ---- model, loss, metrics

    def label_summary(self, record: dict[str, Any]) -> str:
        # the mask is the annotation; a per-class summary, when the data side gives one, wins
        return super().label_summary(record) or f"mask:{record['mask']}"

    def backbone_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        backbone = getattr(model, "backbone", None) or getattr(model, "encoder", None)
        return list(backbone.parameters()) if backbone is not None else []

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Pixel cross-entropy; `targets` int64 [N, H, W], IGNORE_INDEX pixels count nowhere."""
        import torch
        import torch.nn.functional as F

        return F.cross_entropy(_logits(model, images), targets.as_subclass(torch.Tensor), ignore_index=IGNORE_INDEX)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class index per pixel, int64 [N, H, W]."""
        return _logits(model, images).argmax(dim=1).detach()

    def format_predictions(self, preds, classes, sizes):
        import torch

        # the mask back through the inverse of the input's letterbox
        from components.data.letterbox import mask_to_original

        records = []
        for mask, size in zip(preds.cpu(), sizes, strict=True):
            mask = mask_to_original(mask, size)
            counts = torch.bincount(mask.flatten(), minlength=len(classes))
            records.append({"mask": mask.tolist(), "pixels": {name: int(n) for name, n in zip(classes, counts, strict=True) if n}})
        return records

    def make_metric(self, num_classes: int) -> torchmetrics.Metric:
        """A confusion matrix over pixels (IGNORE_INDEX skipped); summarize derives the rest."""
        import torchmetrics

        return torchmetrics.classification.MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=IGNORE_INDEX)

    def summarize(self, computed: torch.Tensor, classes: list[str]) -> dict[str, float]:
        """miou and dice: means over classes present in prediction or target (background
        included); iou/<class> for those classes."""
        iou, dice = iou_and_dice(computed)
        out = {"miou": float(iou.nanmean()), "dice": float(dice.nanmean()), "pixel_accuracy": float(computed.diag().sum() / computed.sum().clamp(min=1))}
        out.update({f"iou/{name}": float(v) for name, v in zip(classes, iou, strict=True) if not v.isnan()})
        return out

    def monitor_of_resamples(self, preds, targets, classes):
        """mIoU of multisets of images from per-image confusion matrices (IGNORE_INDEX
        pixels skipped): one matrix product for all multisets."""
        import numpy as np
        import torch

        n, c = len(preds), len(classes)
        truth, predicted = targets.as_subclass(torch.Tensor).cpu().flatten(1), preds.cpu().flatten(1)
        cells = (torch.arange(n)[:, None] * c * c + truth * c + predicted)[truth != IGNORE_INDEX]
        per_image = torch.bincount(cells, minlength=n * c * c).reshape(n, c * c).double().numpy()

        def fn(counts: np.ndarray) -> np.ndarray:
            confusion = torch.from_numpy(counts.astype(np.float64) @ per_image).reshape(-1, c, c)
            return iou_and_dice(confusion)[0].nanmean(dim=-1).numpy()

        return fn

    def draw(self, image, record, classes, target=None) -> torch.Tensor:
        """image | ground truth | prediction | errors (false positive, false negative and
        wrong-class pixels in their colours over the dimmed image)."""
        import numpy as np
        import torch

        import components.tasks.drawing as drawing

        picture, predicted = drawing.to_pil(image), np.asarray(record["mask"], dtype=np.int64)
        panels = [drawing.titled(drawing.enlarged(picture)[0], "image")]
        if target is not None:
            truth = np.asarray(target.as_subclass(torch.Tensor).cpu(), dtype=np.int64)
            panels.append(drawing.titled(drawing.mask_panel(picture, truth, ignore=IGNORE_INDEX), "ground truth"))
        panels.append(drawing.titled(drawing.mask_panel(picture, predicted, ignore=IGNORE_INDEX), "prediction"))
        if target is not None:
            valid = truth != IGNORE_INDEX
            wrong = float(((truth != predicted) & valid).sum() / max(1, valid.sum()))
            panels.append(drawing.titled(drawing.error_panel(picture, truth, predicted, IGNORE_INDEX), f"errors: {wrong:.1%} of pixels"))
        return drawing.row(panels)

    def draw_legend(self, classes):
        import components.tasks.drawing as drawing

        return [*drawing.class_legend(classes), *((f"error: {k}", c) for k, c in drawing.ERROR_COLOURS.items())]


SPEC = SegmentationTask()
