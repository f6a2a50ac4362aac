"""Checkpoints and inference shared by evaluate, the MLflow pyfunc and `cvops predict`.

A checkpoint is one torch file holding only tensors and plain types (loadable with
`weights_only=True`): {"task", "arch", "classes", "image_size", "state_dict"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from components.data.datamodule import build_transform
from components.data.images import load_rgb
from components.tasks import get_task


def save_checkpoint(path: Path, task: str, arch: str, classes: list[str], image_size: int, model: nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"task": task, "arch": arch, "classes": classes, "image_size": image_size, "state_dict": state}, path)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode) and its metadata; never unpickles arbitrary objects."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    spec = get_task(checkpoint["task"])
    model = spec.build_model(checkpoint["arch"], len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["state_dict"])
    meta = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model.eval(), meta


def to_pil(image: Any) -> Image.Image:
    """Accept encoded bytes, a path, a PIL image or an HxW / HxWxC uint8 array; files are
    opened as training opened them (components/data/images.py: EXIF orientation, modes)."""
    if isinstance(image, Image.Image | bytes | bytearray | str | Path):
        return load_rgb(image)
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


@torch.no_grad()
def predict_images(model: nn.Module, meta: dict[str, Any], images: list[Any], batch_size: int = 32) -> list[dict]:
    """Predictions as plain records (labels, boxes or masks, per the task)."""
    spec = get_task(meta["task"])
    transform = build_transform(spec, meta["image_size"], targets=False)
    records: list[dict] = []
    for start in range(0, len(images), batch_size):
        pils = [to_pil(im) for im in images[start : start + batch_size]]
        batch = torch.stack([transform(torch.from_numpy(np.array(p)).permute(2, 0, 1)) for p in pils])
        preds = spec.predict(model, batch)
        records += spec.format_predictions(preds, meta["classes"], [p.size for p in pils])
    return records
