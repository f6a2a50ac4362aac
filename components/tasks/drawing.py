"""Prediction overlays: boxes with labels and scores, coloured class masks, and a grid of
them for a fixed sample of test images (logged to MLflow by the evaluate stage)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

# one colour per class id; 0 (background) is never drawn
MIN_SIDE = 192
PALETTE = ["#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4"]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A datamodule image (float [3, H, W] in [-1, 1]) as uint8 [3, H, W]."""
    return ((image.detach().cpu().float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


def _upscaled(image: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Small images enlarged (nearest) to about MIN_SIDE px so captions stay readable."""
    factor = max(1, MIN_SIDE // min(image.shape[-2:]))
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1), factor


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, labels: list[str], scores: torch.Tensor,
               label_ids: list[int]) -> torch.Tensor:
    """uint8 [3, H', W'] (upscaled) with XYXY boxes [K, 4] captioned 'label score'."""
    image, factor = _upscaled(image)
    captions = [f"{name} {float(s):.2f}" for name, s in zip(labels, scores, strict=True)]
    colours = [PALETTE[i % len(PALETTE)] for i in label_ids]
    return draw_bounding_boxes(image, boxes.cpu().float() * factor, captions, colors=colours, width=2)


def draw_mask(image: torch.Tensor, mask: torch.Tensor, num_classes: int, alpha: float = 0.5) -> torch.Tensor:
    """uint8 [3, H', W'] (upscaled) with each non-background class of `mask` (int [H, W]) tinted."""
    image, factor = _upscaled(image)
    mask = mask.cpu().repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    masks = torch.stack([mask == c for c in range(1, num_classes)])
    colours = [PALETTE[c % len(PALETTE)] for c in range(1, num_classes)]
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=colours)


def save_grid(images: list[torch.Tensor], out: Path) -> Path:
    """A grid (4 per row) of uint8 [3, H, W] images of one size, written as PNG."""
    grid = make_grid(images, nrow=min(4, len(images)), padding=2, pad_value=255)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out
