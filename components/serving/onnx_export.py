"""A checkpoint's network as ONNX (torch.onnx.export with the dynamo exporter, dynamic batch).

What goes into the graph is decided by the model's structure, not by the task:
- a network returning a tensor (classifiers, SmallUNet) or {"out": tensor} (torchvision's
  segmentation models) is exported whole: logits / mask logits;
- a torchvision one-stage detector (FCOS, RetinaNet) is exported as backbone + head, its raw
  per-anchor outputs. Its post-processing (score threshold, top-k, batched NMS) cannot go
  into the graph: torch.export stops on NMS's data-dependent output size
  (GuardOnDataDependentSymNode in torchvision.ops.boxes._batched_nms_coordinate_trick, torch
  2.13 / torchvision 0.28). onnx_runtime.OnnxDetector runs torchvision's own
  postprocess_detections on the ONNX outputs instead, so boxes are decoded by the same code
  as in eager mode. Two-stage detectors (Faster R-CNN) and SSD are not exportable here.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim
from torchvision.models.detection import FCOS, RetinaNet

INPUT = "images"
ONE_STAGE = (FCOS, RetinaNet)


class UnsupportedExport(ValueError):
    """The network has no ONNX export path here (the stage records why and skips it)."""


class _Logits(nn.Module):
    """A network whose output is a tensor or {"out": tensor} -> that tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(images)
        return out["out"] if isinstance(out, dict) else out


class DetectorHead(nn.Module):
    """A one-stage detector's backbone + head: images [N, 3, H, W] (H, W multiples of 32, as
    the detector's transform pads them) -> its head outputs, concatenated over FPN levels
    ([N, anchors, C] class logits, [N, anchors, 4] box regression, FCOS's [N, anchors, 1]
    centerness), in `output_names` order."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head
        self.output_names = ["cls_logits", "bbox_regression"] + (["bbox_ctrness"] if isinstance(detector, FCOS) else [])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = list(self.backbone(images).values())
        outputs = self.head(features)
        return tuple(outputs[k] for k in self.output_names)


def graph_of(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module that is exported and the names of its outputs."""
    if isinstance(model, ONE_STAGE):
        head = DetectorHead(model).eval()
        return head, head.output_names
    if model.__class__.__name__ in ("FasterRCNN", "SSD", "MaskRCNN", "KeypointRCNN"):
        raise UnsupportedExport(f"{model.__class__.__name__}: only one-stage detectors (FCOS, RetinaNet) export to ONNX here")
    return _Logits(model).eval(), ["logits"]


def padded_size(size: int, divisor: int = 32) -> int:
    """What GeneralizedRCNNTransform pads a side to (the exported detector's input size)."""
    return -(-size // divisor) * divisor


def graph_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the exported graph takes for `images`: a one-stage detector's are zero-padded
    bottom-right to multiples of 32, as its transform pads them; others are unchanged."""
    if not isinstance(model, ONE_STAGE):
        return images
    h, w = images.shape[-2:]
    return torch.nn.functional.pad(images, (0, padded_size(w) - w, 0, padded_size(h) - h))


def export_onnx(model: nn.Module, image_size: int, path: Path, example_batch: int = 2) -> list[str]:
    """Export `model` (eval mode) to `path` with a dynamic batch axis; returns output names."""
    graph, names = graph_of(model)
    side = padded_size(image_size) if isinstance(model, ONE_STAGE) else image_size
    example = torch.randn(example_batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the exporter's progress lines and deprecation notes are noise here
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(graph, (example,), str(path), dynamo=True, input_names=[INPUT], output_names=names,
                          dynamic_shapes=({0: Dim("batch", min=1, max=4096)},), external_data=False, verbose=False)
    return names
