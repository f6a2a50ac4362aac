"""Letterbox: the one way an image of any aspect becomes the model's square input, and the
way predictions go back to the image's own pixels.

The image is resized so that its longer side is `side` (aspect kept: a circle stays a
circle) and padded on the right and bottom to `side` x `side`. Boxes and masks follow as
tv_tensors (torchvision v2 resizes boxes by the same factors and masks by nearest
neighbour; padding leaves boxes where they are and fills masks with MASK_FILL, which every
loss and metric ignores). Because the content sits at the top-left corner, going back is a
pure scale: x_original = x * width / fitted_width, with the fitted size computed by the
same `fitted` function from the original size, so the inverse is exact.

Training, evaluation and serving all call `build_transform` (components/data/datamodule.py),
which starts with `Letterbox`; `TaskSpec.format_predictions` maps back with `boxes_to_original`
and `mask_to_original`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

MASK_FILL = 255  # = segmentation.IGNORE_INDEX: padded pixels count in no loss and no metric
IMAGE_FILL = 128  # mid grey, ~0 after the [-1, 1] normalisation


def fitted(width: int, height: int, canvas: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a width x height image letterboxed into `canvas` (H, W)."""
    scale = min(canvas[0] / height, canvas[1] / width)
    return min(canvas[1], max(1, round(width * scale))), min(canvas[0], max(1, round(height * scale)))


def _size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(H, W) of the sample's image (a tv_tensors.Image, or the pure tensor v2 treats as one)."""
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.Image) or (isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor)):
            return tuple(v2.functional.get_size(inpt))
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.Mask):
            return tuple(v2.functional.get_size(inpt))
    raise TypeError("Letterbox needs an image in the sample")


class Letterbox(v2.Transform):
    """Aspect-preserving resize to fit `side` x `side`, then pad right and bottom to it."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _size(flat_inputs)
        fit_w, fit_h = fitted(width, height, (self.side, self.side))
        return {"size": [fit_h, fit_w], "padding": [0, 0, self.side - fit_w, self.side - fit_h],
                "resize": (fit_h, fit_w) != (height, width)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["resize"]:  # an image already at its fitted size is left untouched (bit-identical)
            inpt = v2.functional.resize(inpt, params["size"], antialias=True)
        if not any(params["padding"]):
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return v2.functional.pad(inpt, params["padding"])  # moves nothing, widens the canvas
        fill = MASK_FILL if isinstance(inpt, tv_tensors.Mask) else IMAGE_FILL
        return v2.functional.pad(inpt, params["padding"], fill=fill)


def boxes_to_original(boxes: torch.Tensor, canvas: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """XYXY boxes [K, 4] on the letterboxed `canvas` (H, W) -> pixels of the original `size`
    (W, H), clipped to it (a box reaching into the padding ends at the image's edge)."""
    width, height = size
    fit_w, fit_h = fitted(width, height, canvas)
    scale = torch.tensor([width / fit_w, height / fit_h] * 2, dtype=torch.float64)
    out = boxes.double() * scale
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def mask_to_original(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A class-index mask [H, W] on the letterboxed canvas -> [height, width] of the original
    `size` (W, H): the padding cropped off, then nearest-neighbour back to full size (as v2
    resized the target mask, so a mask round trip at integer scales is exact)."""
    width, height = size
    fit_w, fit_h = fitted(width, height, tuple(mask.shape[-2:]))
    content = mask[:fit_h, :fit_w]
    if (fit_h, fit_w) == (height, width):
        return content.long()
    return F.interpolate(content[None, None].float(), size=(height, width), mode="nearest")[0, 0].long()
