"""A task-agnostic Lightning datamodule over a canonical dataset directory.

The TaskSpec reads the annotations and builds targets; torchvision.transforms.v2 transforms
image and target together, so boxes and masks stay aligned with the augmented image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from components.data import shards
from components.data.images import MEAN, STD, load_rgb
from components.data.letterbox import Letterbox
from components.tasks.base import TaskSpec

AUGMENTATIONS = {
    "hflip": lambda: v2.RandomHorizontalFlip(),
    "vflip": lambda: v2.RandomVerticalFlip(),
    "affine": lambda: v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.85, 1.15)),
    "color": lambda: v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
}


def build_transform(spec: TaskSpec, image_size: int, augment: list[str] = (), targets: bool = True) -> v2.Compose:
    """Letterbox to a square (aspect kept, boxes and masks following: components/data/
    letterbox.py), optional augmentations, float in [-1, 1], then (with targets) the task's
    own clean-up of targets (e.g. dropping boxes an augmentation pushed out of the image).
    Training, evaluation and serving all use it; inference transforms bare images:
    `targets=False`."""
    steps = [Letterbox(image_size)]
    steps += [AUGMENTATIONS[name]() for name in augment]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(steps + (spec.target_transforms() if targets else []))


def dataset_classes(root: Path, spec: TaskSpec, records: list[dict[str, Any]]) -> list[str]:
    """The declared class list (dataset.json) or, failing that, the sorted annotated classes."""
    meta = root / "dataset.json"
    declared = json.loads(meta.read_text()).get("classes") if meta.exists() else None
    if not declared:
        declared = sorted({c for r in records for c in spec.record_classes(r)})
    return spec.class_names(declared)


class ImageDataset(Dataset):
    """(image [3, H, W] float, target) pairs for one split."""

    def __init__(self, root: Path, records: list[dict], spec: TaskSpec, classes: list[str], transform: v2.Compose):
        self.records, self.spec, self.transform = records, spec, transform
        self.root = shards.dataset_root(root)  # scale (issue 18): loose folder or sharded dataset
        self.class_to_idx = {name: i for i, name in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        record = self.records[index]
        # the manifest decoded it the same way: EXIF orientation, mode -> 8-bit RGB with scaling
        image = tv_tensors.Image(v2.functional.pil_to_tensor(load_rgb(self.root / record["path"])))
        target = self.spec.load_target(record, self.root, tuple(image.shape[-2:]), self.class_to_idx)
        return self.transform(image, target)


class CVDataModule(L.LightningDataModule):
    """Train batches are shuffled and augmented from `seed` alone: the loader's own generator
    gives the shuffle order (without DDP) and the base seed of its worker processes, from
    which torch seeds each worker's torch, numpy and random (Lightning's worker_init_fn, with
    `seed_everything(workers=True)`, mixes in the rank). With `num_workers: 0` augmentations
    draw from the process's torch RNG, which the train stage seeds."""

    def __init__(self, root: str | Path, spec: TaskSpec, image_size: int, batch_size: int,
                 augment: list[str] = (), num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.root, self.spec, self.seed = Path(root), spec, seed
        self.image_size, self.batch_size, self.augment, self.num_workers = image_size, batch_size, list(augment), num_workers
        self.records = spec.read_records(self.root)
        self.classes = dataset_classes(self.root, spec, self.records)

    def dataset(self, split: str, train: bool = False) -> ImageDataset:
        records = [r for r in self.records if r["split"] == split]
        transform = build_transform(self.spec, self.image_size, self.augment if train else [])
        return ImageDataset(self.root, records, self.spec, self.classes, transform)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        return DataLoader(
            self.dataset(split, train), batch_size=self.batch_size, shuffle=train, drop_last=False,
            num_workers=self.num_workers, collate_fn=self.spec.collate, persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
