"""ONNX Runtime behind the torch model's interface, so that the TaskSpec's predict and
format contract, the metric code and `predict_images` run unchanged on an exported model.

`OnnxModel(images)` returns what the eager network returns (logits / mask logits);
`OnnxDetector(list_of_images)` returns what a torchvision detector returns in eval mode
(boxes, scores, labels per image): the ONNX graph holds backbone + head, and torchvision's
own anchor generator and postprocess_detections decode its outputs (onnx_export.py says why
they are not in the graph). Both are nn.Modules with one empty parameter, because callers
read the device from `next(model.parameters())`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from components.serving.onnx_export import INPUT, ONE_STAGE, padded_size
from components.tasks import get_task


def session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session; `threads` fixes the intra-op thread count (None: ORT's default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """An exported network on ONNX Runtime: images [N, 3, H, W] -> its first output."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        super().__init__()
        self.session = sess
        self._device = nn.Parameter(torch.empty(0), requires_grad=False)

    def run(self, images: torch.Tensor) -> list[np.ndarray]:
        return self.session.run(None, {INPUT: images.detach().cpu().numpy().astype(np.float32)})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(images)[0])


class OnnxDetector(OnnxModel):
    """An exported one-stage detector (backbone + head) with torchvision's decoding.

    `skeleton` is the detector built from the checkpoint's arch: its weights are not used,
    only its anchor generator, box coder and post-processing settings (score threshold,
    top-k, NMS IoU, detections per image)."""

    def __init__(self, sess: ort.InferenceSession, skeleton: nn.Module, image_size: int) -> None:
        super().__init__(sess)
        from torchvision.models.detection.image_list import ImageList

        self.skeleton, self.image_size, self.side = skeleton.eval(), image_size, padded_size(image_size)
        with torch.no_grad():  # anchors depend only on the (fixed) input size: computed once
            zeros = torch.zeros(1, 3, self.side, self.side)
            features = list(skeleton.backbone(zeros).values())
            self.anchors = skeleton.anchor_generator(ImageList(zeros, [(image_size, image_size)]), features)[0]
        per_location = self.anchors.shape[0] // sum(f.shape[2] * f.shape[3] for f in features)
        self.split = [f.shape[2] * f.shape[3] * per_location for f in features]

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        batch = torch.stack(list(images))
        h, w = batch.shape[-2:]
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"the exported detector takes {self.image_size}x{self.image_size} images, got {h}x{w}")
        batch = F.pad(batch, (0, self.side - w, 0, self.side - h))  # as GeneralizedRCNNTransform pads: zeros, bottom-right
        names = [o.name for o in self.session.get_outputs()]
        outputs = {k: list(torch.from_numpy(v).split(self.split, dim=1)) for k, v in zip(names, self.run(batch), strict=True)}
        anchors = [list(self.anchors.split(self.split))] * len(batch)
        return self.skeleton.postprocess_detections(outputs, anchors, [(h, w)] * len(batch))


def onnx_model(path: str | Path, meta: dict[str, Any], threads: int | None = None) -> OnnxModel:
    """The exported model at `path` for the checkpoint metadata `meta` (task, arch, classes,
    image_size), ready for TaskSpec.predict."""
    sess = session(path, threads)
    skeleton = get_task(meta["task"]).build_model(meta["arch"], len(meta["classes"]))
    if isinstance(skeleton, ONE_STAGE):
        return OnnxDetector(sess, skeleton, meta["image_size"]).eval()
    return OnnxModel(sess).eval()


def load_exported(directory: str | Path, fmt: str, threads: int | None = None) -> tuple[OnnxModel, dict[str, Any]]:
    """An export folder (the stage's exports/<task>/ or a run's downloaded export/): its
    model.<fmt>.onnx and meta.json."""
    directory = Path(directory)
    path = directory / f"model.{fmt}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the export stage did not produce an {fmt} model (see export.json)")
    meta = json.loads((directory / "meta.json").read_text())
    return onnx_model(path, meta, threads), meta
