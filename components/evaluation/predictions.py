"""One pass of a model over cached test samples, keeping per-image predictions so that
per-group metrics and bootstrap resamples never re-run the model.

Batch objects are whatever the TaskSpec collates and predicts: a tensor with the image axis
first (classification labels and probabilities, segmentation masks), a list with one entry
per image (detection dicts), or a dict of those (components/data/batch.py handles all three).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from components.data.batch import concat, take, to_device  # noqa: F401  (re-exported)
from components.data.images import MEAN, STD
from components.tasks.base import TaskSpec

Sample = tuple[torch.Tensor, Any]  # (image [3, H, W] normalised to [-1, 1], target)

_MEAN = torch.tensor(MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(STD).view(1, 3, 1, 1)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Model input (normalised, [N, 3, H, W] or [3, H, W]) -> pixels in [0, 1]."""
    shape = (1, 3, 1, 1) if images.dim() == 4 else (3, 1, 1)
    return images * _STD.view(shape).to(images) + _MEAN.view(shape).to(images)


def to_model(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> model input, the inverse of `to_pixels`."""
    shape = (1, 3, 1, 1) if pixels.dim() == 4 else (3, 1, 1)
    return (pixels - _MEAN.view(shape).to(pixels)) / _STD.view(shape).to(pixels)


def _nhwc_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                 for a in args)


def channels_last(model: nn.Module) -> nn.Module:
    """The model with its weights, and each 4-D image batch it is given, channels-last (NHWC):
    oneDNN's CPU convolutions run NHWC, so NCHW costs a layout change per layer. Measured on
    the U-Net, 2 threads, batch 32 at 64 px: forward 2.2-3.8x, input gradient (the attacks)
    1.7x faster; NHWC weights with NCHW input make gradients slower, hence the hook. A
    detector's transform batches the images itself: weights only (~1.05x). In place, once."""
    if not getattr(model, "_cvops_channels_last", False):
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_nhwc_input)  # a module-level function: pickles to Ray actors
        model._cvops_channels_last = True
    return model


def batches(spec: TaskSpec, samples: Sequence[Sample], batch_size: int) -> Iterator[tuple[torch.Tensor, Any]]:
    """Collate samples into (images [B, 3, H, W], targets) batches in order."""
    for start in range(0, len(samples), batch_size):
        yield spec.collate(samples[start:start + batch_size])


def metric_value(spec: TaskSpec, num_classes: int, classes: list[str], preds: Any, targets: Any) -> dict[str, float]:
    """The task's summarized metrics of predictions / targets (a fresh metric each call)."""
    metric = spec.make_metric(num_classes)
    metric.update(preds, targets)
    return spec.summarize(metric.compute(), classes)


def monitor_value(spec: TaskSpec, classes: list[str], preds: Any, targets: Any) -> float:
    """The task's monitored metric of these images (TaskSpec.monitor_of_resamples, one copy
    of each): how robustness rows and fairness groups are measured alike."""
    return float(spec.monitor_of_resamples(preds, targets, classes)(np.ones((1, len(targets)), dtype=np.int64))[0])


@torch.no_grad()
def predict_all(spec: TaskSpec, model: nn.Module, samples: Sequence[Sample], batch_size: int) -> tuple[Any, Any]:
    """(predictions, targets) for all samples, joined along the image axis, on the CPU."""
    preds, targets = [], []
    device = next(model.parameters()).device
    for images, batch_targets in batches(spec, samples, batch_size):
        preds.append(to_device(spec.predict(model, images.to(device)), "cpu"))
        targets.append(batch_targets)
    return concat(preds), concat(targets)
