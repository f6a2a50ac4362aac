"""Explanations: Grad-CAM (for tasks whose TaskSpec.explain uses it) and a grid of the
heatmaps over a fixed sample of correct and wrong predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from components.evaluation.predictions import Sample, to_device, to_pixels  # noqa: E402
from components.tasks.base import TaskSpec  # noqa: E402


def last_conv(model: nn.Module) -> nn.Module:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"Grad-CAM needs a Conv2d layer; {type(model).__name__} has none: give the TaskSpec its own explain()")
    return convs[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, layer: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the predicted class. images [N, 3, H, W] (model input) ->
    (heatmaps [N, H, W] in [0, 1], predicted class [N]). The model stays in eval mode."""
    layer = layer or last_conv(model)
    kept: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("act", out))
    try:
        with torch.enable_grad():
            logits = model(images)
            predicted = logits.argmax(dim=1)
            score = logits.gather(1, predicted[:, None]).sum()
            grads = torch.autograd.grad(score, kept["act"])[0]
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # [N, K, 1, 1]: channel importance
    cam = F.relu((weights * kept["act"]).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return cam / peak, predicted


def explanation_grid(
    spec: TaskSpec, model: nn.Module, samples: Sequence[Sample], classes: list[str], per_kind: int, out: Path
) -> Path | None:
    """The first `per_kind` correct and first `per_kind` wrong test images with their
    heatmaps, as one PNG; None when the task has no explanations."""
    if per_kind == 0 or not samples:
        return None
    images, targets = spec.collate(samples[:512])  # enough to find wrong predictions, bounded
    device = next(model.parameters()).device
    images, targets = images.to(device), to_device(targets, device)
    model.eval()
    explained = spec.explain(model, images, targets, classes)
    if explained is None:
        return None
    picks = [i for i, e in enumerate(explained) if e["correct"]][:per_kind]
    picks += [i for i, e in enumerate(explained) if not e["correct"]][:per_kind]
    return _draw(to_pixels(images[picks]).clamp(0, 1), [explained[i] for i in picks], out)


def _draw(pixels: torch.Tensor, explained: list[dict[str, Any]], out: Path) -> Path:
    cols = min(4, len(explained))  # 4 across: each map large enough to read at the figure's size
    rows = -(-len(explained) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, item in zip(axes.flat, pixels, explained, strict=False):
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())
        ax.imshow(item["heatmap"].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(item["title"], fontsize=10, color="green" if item["correct"] else "red")
    fig.suptitle("Grad-CAM (true -> predicted): correct in green, wrong in red", fontsize=11)
    fig.tight_layout(h_pad=2.0)  # room for the lower row's titles
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
