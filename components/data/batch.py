"""Batch objects, whatever a TaskSpec collates and predicts: a tensor with the image axis first
(classification labels and probabilities, segmentation masks), a list with one entry per
image (detection dicts), or a dict of those. These join, move and index all three."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def concat(parts: Sequence[Any]) -> Any:
    """Join per-batch objects along the image axis."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([torch.as_tensor(p) for p in parts])
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    return [item for p in parts for item in p]


def to_device(batch: Any, device: torch.device | str) -> Any:
    """A batch object (tensor, list or dict of them; tv_tensors keep their type) on device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return [to_device(v, device) for v in batch]
    return batch


def take(batch: Any, index: Sequence[int] | torch.Tensor) -> Any:
    """The images `index` (with repeats, for bootstraps) of a batch object."""
    index = torch.as_tensor(index, dtype=torch.long)
    if isinstance(batch, torch.Tensor):
        return batch[index]
    if isinstance(batch, dict):
        return {k: take(v, index) for k, v in batch.items()}
    return [batch[i] for i in index.tolist()]
