"""Training input through Ray Data and Ray Train's dataset shards (`train.input: ray_data`, which
needs `data.storage: shards`), instead of each worker's DataLoader (`train.input: loader`, the
default: loose files, or shards read by offset).

The driver hands TorchTrainer one Ray Dataset per split it streams (`train_datasets`: the
train shards, read as raw WebDataset bytes, files shuffled with `FileShuffleConfig(seed)`,
reseeded each execution, i.e. each epoch). Ray Train splits it across the workers
(`streaming_split(equal=True)`: every DDP rank gets the same row count, so no rank waits on a
missing batch). On each worker `RayTrainBatches` is the train dataloader Lightning iterates:
each pass is one epoch of `iter_torch_batches` with a local shuffle buffer seeded by
(seed, epoch, rank): streamed, reshuffled every epoch, the same order for the same seed.
Decoding, targets and augmentations run in `collate`, through the same `ImageDataset` code
the loose loader uses (a batch's members stand in for the files). Validation keeps the
map-style loader, which reads a sharded dataset by offset (components/data/shards.py).

**Read tasks take no CPU** (`num_cpus=0`): they only cut tar files into rows of bytes; the
decode is in `collate`, on the Train worker, which holds its CPU. A read task asking for a CPU
could never be placed on a cluster whose CPUs the Train workers hold (2 workers x 1 CPU on a
2-CPU machine: what the tests run), and training waited forever for its first batch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from components.data import shards
from components.data.datamodule import ImageDataset, build_transform
from components.tasks.base import TaskSpec

SHUFFLE_BUFFER = 1024  # rows: a local shuffle on top of the file shuffle; memory ~ 1024 small images
META = ("__key__", "__url__", "json")


def train_datasets(data_root: str, seed: int) -> dict[str, Any]:
    """{"train": Ray Dataset of the train shards}, for TorchTrainer(datasets=...)."""
    import ray
    from ray.data import FileShuffleConfig

    paths = shards.shard_paths(data_root, "train")
    return {"train": ray.data.read_webdataset(paths, decoder=None, shuffle=FileShuffleConfig(seed=seed), num_cpus=0)}


def dataset_config():
    """Split only the train dataset across workers (Ray Train's DataConfig)."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=["train"])


class RayTrainBatches:
    """The train dataloader of a worker: iterating it runs one epoch of its dataset shard."""

    def __init__(self, spec: TaskSpec, classes: list[str], image_size: int, augment: list[str], batch_size: int,
                 seed: int, train_rows: int) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.shard = ray.train.get_dataset_shard("train")
        self.spec, self.classes, self.batch_size, self.seed, self.epoch = spec, classes, batch_size, seed, 0
        self.transform = build_transform(spec, image_size, augment)
        self.rows = train_rows // self.world  # equal split: the remainder is dropped

    def __len__(self) -> int:  # Lightning's step estimate (the LR schedule) needs it
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self):
        seed = int(np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1)[0])
        self.epoch += 1
        yield from self.shard.iter_torch_batches(
            batch_size=self.batch_size, collate_fn=self.collate, local_shuffle_buffer_size=SHUFFLE_BUFFER,
            local_shuffle_seed=seed, prefetch_batches=2,
        )

    def collate(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, Any]:
        records = [json.loads(raw) for raw in batch["json"]]
        files: dict[str, bytes] = {}
        for member in (c for c in batch if c not in META):
            field = member.split(".", 1)[0]
            for record, data in zip(records, batch[member], strict=True):
                if data is not None:
                    files[record["path"] if field == "image" else record[field]] = data
        dataset = ImageDataset(shards.MemberRoot(files), records, self.spec, self.classes, self.transform)
        return self.spec.collate([dataset[i] for i in range(len(dataset))])


def streams(config: dict[str, Any]) -> bool:
    return config["train"].get("input") == "ray_data"


def trainer_datasets(config: dict[str, Any]) -> dict[str, Any]:
    """TorchTrainer's `datasets` / `dataset_config` keywords: none for the DataLoader input."""
    if not streams(config):
        return {}
    return {"datasets": train_datasets(config["data_root"], config["seed"]), "dataset_config": dataset_config()}


def fit_loaders(data: Any, config: dict[str, Any]) -> dict[str, Any]:
    """`trainer.fit` keywords on a worker: the datamodule (DataLoader input), or the streamed
    train batches and the map-style val loader (Ray Data input)."""
    if not streams(config):
        return {"datamodule": data}
    train_rows = sum(r["split"] == "train" for r in data.records)
    batches = RayTrainBatches(data.spec, data.classes, config["image_size"], config["train"]["augment"],
                              config["train"]["batch_size"], config["seed"], train_rows)
    if batches.rank == 0:
        print(f"train input: Ray Data dataset shards, {batches.rows} rows per worker x {batches.world}", flush=True)
    return {"train_dataloaders": batches, "val_dataloaders": data.val_dataloader()}
