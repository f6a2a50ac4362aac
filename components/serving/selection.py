"""Which of a record's boxes are shown: the task's operating point (score floor, class-aware
NMS IoU, most boxes per image) and the selection itself. One place for the evaluation's
figures and `cvops predict`; apart from predict.py so that the stages that draw figures
(evaluate, promote) do not depend on the ONNX serving code predict.py also reaches."""

from __future__ import annotations

from typing import Any


def operating_point(task: str) -> dict[str, Any]:
    from components.tasks import OPERATING_POINTS

    return dict(OPERATING_POINTS.get(task, {}))


def select(record: dict[str, Any], conf: float | None = None, iou: float | None = None,
           max_det: int | None = None) -> dict[str, Any]:
    """A detection record's boxes with score >= conf, class-aware NMS at `iou` (torchvision's
    batched_nms: a box suppresses only boxes of its own class), the best max_det kept.
    Records without detections are returned as they are."""
    if "detections" not in record:
        return record
    import torch
    from torchvision.ops import batched_nms

    dets = [d for d in record["detections"] if conf is None or d["score"] >= conf]
    if dets and iou is not None:
        labels = {name: i for i, name in enumerate(dict.fromkeys(d["label"] for d in dets))}
        keep = batched_nms(torch.tensor([d["box"] for d in dets], dtype=torch.float32),
                           torch.tensor([d["score"] for d in dets], dtype=torch.float32),
                           torch.tensor([labels[d["label"]] for d in dets]), iou).tolist()
        dets = [dets[i] for i in keep]  # best score first
    else:
        dets = sorted(dets, key=lambda d: -d["score"])
    return {**record, "detections": dets[:max_det] if max_det is not None else dets}
