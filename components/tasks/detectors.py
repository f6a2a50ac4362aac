"""The torch half of the detection task: torchvision detectors for tiny images and the COCO
mAP metric. components/tasks/detection.py imports this module when it builds a model or a
metric, so the task's names, readers and zoo load without torch (`cvops tasks`, prepare)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from components.tasks.nets import SmallDetectionBody


class InputAsIs(GeneralizedRCNNTransform):
    """The datamodule already resized to image_size and normalised to [-1, 1]: torchvision's
    detector transform must neither resize again (its min_size default is 800 px) nor
    re-normalise with ImageNet statistics. It still pads the batch to a multiple of 32."""

    def __init__(self) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0])

    def resize(self, image, target=None):
        return image, target


def as_is(name: str, **kw) -> nn.Module:
    """torchvision's detector `name` with InputAsIs as its input transform (no resize, no
    re-normalisation)."""
    model = getattr(tvd, name)(**kw)
    model.transform = InputAsIs()
    return model


def _backbone(name: str) -> BackboneWithFPN:
    """FPN backbone from scratch: 'small' (SmallDetectionBody) or a torchvision resnet.
    Output levels '0', '1', '2' (strides 8, 16, 32) and 'pool' (stride 64)."""
    if name == "small":
        body = SmallDetectionBody()
        return BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, list(body.channels), 64)
    return resnet_fpn_backbone(backbone_name=name, weights=None, trainable_layers=5, returned_layers=[2, 3, 4])


def custom(detector: str, backbone: str, num_classes: int) -> nn.Module:
    """`detector` (fcos | retinanet | fasterrcnn) on `backbone` with anchors for small objects."""
    fpn = _backbone(backbone)
    sizes = (8, 16, 32, 64)  # one anchor size per level (stride-sized, as FCOS expects)
    if detector == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * 4)
        model = tvd.FCOS(fpn, num_classes, anchor_generator=anchors, score_thresh=0.05, detections_per_img=50)
    elif detector == "retinanet":
        anchors = AnchorGenerator(tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes), ((0.5, 1.0, 2.0),) * 4)
        model = tvd.RetinaNet(fpn, num_classes, anchor_generator=anchors, detections_per_img=50)
    else:
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 4)
        pooler = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
        model = tvd.FasterRCNN(fpn, num_classes, rpn_anchor_generator=anchors, box_roi_pool=pooler, box_detections_per_img=50)
    model.transform = InputAsIs()
    return model


def plain(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """tv_tensors -> plain tensors on `device` (torchvision's detectors and torchmetrics)."""
    return [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)} for t in targets]


# faster-coco-eval logs its 12-line COCO summary at INFO at every compute (every validation of
# every worker); the numbers are in the metrics already
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)


class DetectionMAP(MeanAveragePrecision):
    """COCO mAP (faster-coco-eval backend) taking this task's predictions and targets."""

    def update(self, preds: list[dict[str, torch.Tensor]], target: list[dict[str, Any]]) -> None:
        device = self.device
        preds = [{k: p[k].to(device) for k in ("boxes", "scores", "labels")} for p in preds]
        super().update(preds, plain(target, device))
