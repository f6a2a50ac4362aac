"""Training input through Ray Data and Ray Train's dataset shards (`train.input: ray_data`, which
needs `data.storage: shards`), instead of each worker's DataLoader (`train.input: loader`, the
default: loose files, or shards read by offset).

The driver hands TorchTrainer one Ray Dataset per split it streams (`train_datasets`: the
train shards, read by `ShardSamples`, files shuffled with `FileShuffleConfig(seed)`, reseeded
each execution, i.e. each epoch). Ray Train splits it across the workers
(`streaming_split(equal=True)`: every DDP rank gets the same row count, so no rank waits on a
missing batch). On each worker `RayTrainBatches` is the train dataloader Lightning iterates:
each pass is one epoch of `iter_torch_batches` with a local shuffle buffer seeded by
(seed, epoch, rank): streamed, reshuffled every epoch, the same order for the same seed.
Decoding, targets and augmentations run in `collate`, through the same `ImageDataset` code
the loose loader uses (a batch's members stand in for the files). Validation keeps the
map-style loader, which reads a sharded dataset by offset (components/data/shards.py).

**Where the CPU went, and what this does instead** (issue 18, benchmarks/bench_train_input.py):
`read_webdataset` parses each tar in Python and yields one single-row pandas block per sample
(~0.2 ms of CPU per image, a third of a 32 px image's whole decode and transform), and collate
then ran `json.loads` per row. `ShardSamples` cuts a shard by the member offsets of the
Parquet index instead (components/training/shard_samples.py: one sequential read, a slice
per member, a pyarrow block per 512 samples); rows carry only the image path and the member bytes, and collate looks the record
up in the split's records (no JSON per row). Collate also converts and normalises the stacked
batch once (`ToDtype` + `Normalize` are elementwise, so the result is the same tensor)
instead of once per image.

**Read tasks take no CPU** (`num_cpus=0`): they only cut tar files into rows of bytes; the
decode is in `collate`, on the Train worker, which holds its CPU. A read task asking for a CPU
could never be placed on a cluster whose CPUs the Train workers hold (2 workers x 1 CPU on a
2-CPU machine: what the tests run), and training waited forever for its first batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from components.data import shards
from components.data.datamodule import ImageDataset, build_transform
from components.tasks.base import TaskSpec

SHUFFLE_BUFFER = 1024  # rows: a local shuffle on top of the file shuffle; memory ~ 1024 small images


def train_datasets(data_root: str, seed: int) -> dict[str, Any]:
    """{"train": Ray Dataset of the train shards}, for TorchTrainer(datasets=...)."""
    import ray  # ray.data and the datasource: imported only when streaming
    from ray.data import FileShuffleConfig

    from components.training.shard_samples import ShardSamples

    paths = shards.shard_paths(data_root, "train")
    source = ShardSamples(paths, str(Path(data_root).resolve() / shards.INDEX), shuffle=FileShuffleConfig(seed=seed))
    return {"train": ray.data.read_datasource(source, num_cpus=0)}


def dataset_config():
    """Split only the train dataset across workers (Ray Train's DataConfig)."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=["train"])


def split_transform(transform: v2.Compose) -> tuple[v2.Compose, v2.Compose]:
    """(per-image steps, batch steps): `ToDtype` and `Normalize` lifted out of the per-image
    pipeline, to run once on the stacked uint8 batch. Elementwise, so the same numbers; the
    steps after them (the task's target clean-up) never read pixel values."""
    batch = [t for t in transform.transforms if isinstance(t, v2.ToDtype | v2.Normalize)]
    return v2.Compose([t for t in transform.transforms if t not in batch]), v2.Compose(batch)


class RayTrainBatches:
    """The train dataloader of a worker: iterating it runs one epoch of its dataset shard."""

    def __init__(self, spec: TaskSpec, classes: list[str], image_size: int, augment: list[str], batch_size: int,
                 seed: int, records: list[dict[str, Any]]) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.shard = ray.train.get_dataset_shard("train")
        self.setup(spec, classes, image_size, augment, records)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.rows = len(self.records) // self.world  # equal split: the remainder is dropped

    def setup(self, spec: TaskSpec, classes: list[str], image_size: int, augment: list[str],
              records: list[dict[str, Any]]) -> None:
        """What collate needs (also outside a Train run: the benchmark)."""
        self.spec, self.classes = spec, classes
        self.records = {r["path"]: r for r in records if r["split"] == "train"}
        self.per_image, self.per_batch = split_transform(build_transform(spec, image_size, augment))

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
        records = [self.records[path] for path in batch["path"]]
        files: dict[str, bytes] = {}
        for field in (c for c in batch if c != "path"):
            for record, data in zip(records, batch[field], strict=True):
                if data is not None:
                    files[record["path"] if field == "image" else record[field]] = data
        dataset = ImageDataset(shards.MemberRoot(files), records, self.spec, self.classes, self.per_image)
        images, targets = self.spec.collate([dataset[i] for i in range(len(dataset))])
        return self.per_batch(images), targets


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
    batches = RayTrainBatches(data.spec, data.classes, config["image_size"], config["train"]["augment"],
                              config["train"]["batch_size"], config["seed"], data.records)
    if batches.rank == 0:
        print(f"train input: Ray Data dataset shards, {batches.rows} rows per worker x {batches.world}", flush=True)
    return {"train_dataloaders": batches, "val_dataloaders": data.val_dataloader()}
