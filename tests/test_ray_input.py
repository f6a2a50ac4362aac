"""The streamed training input's pieces without a cluster (components/training/ray_input.py,
shard_samples.py): the rows a read task cuts out of a shard are the stored files, and the
collate of such rows gives the loader's tensors exactly. The Train run itself:
tests/test_scale.py::test_pipeline_on_shards_trains_through_ray_data (slow)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from components.data import shapes, shards
from components.data.datamodule import CVDataModule, dataset_classes
from components.tasks import get_task
from components.training.ray_input import RayTrainBatches
from components.training.shard_samples import ShardSamples


def _rows(root: Path, split: str) -> pa.Table:
    # the read task's own code, without constructing the datasource (which resolves its paths
    # through a Ray cluster it would start)
    reader = types.SimpleNamespace(index=str(root / shards.INDEX))
    tables = []
    for path in shards.shard_paths(root, split):
        with open(path, "rb") as f:
            tables += list(ShardSamples._read_stream(reader, f, path))
    return pa.concat_tables(tables)


def test_streamed_rows_and_collate_equal_the_loose_files_and_loader(tmp_path: Path) -> None:
    spec = get_task("segmentation")  # two members per sample (image, mask)
    loose = shapes.generate(tmp_path / "loose", shapes.ShapesConfig(num_images=40, image_size=16, seed=3))
    sharded = shapes.generate(tmp_path / "s", shapes.ShapesConfig(num_images=40, image_size=16, seed=3))
    shards.write_shards(sharded, spec, 0.005)
    records = spec.read_records(sharded)
    rows = _rows(sharded, "train").to_pydict()
    by_path = {r["path"]: r for r in records}
    assert len(shards.shard_paths(sharded, "train")) > 1
    assert sorted(rows["path"]) == sorted(r["path"] for r in records if r["split"] == "train")
    for path, image, mask in zip(rows["path"], rows["image"], rows["mask"], strict=True):
        assert image == (loose / path).read_bytes() and mask == (loose / by_path[path]["mask"]).read_bytes()

    batches = RayTrainBatches.__new__(RayTrainBatches)  # collate only, outside a Train run
    batches.setup(spec, dataset_classes(sharded, spec, records), 24, [], records)
    images, masks = batches.collate({k: np.asarray(v, dtype=object) for k, v in rows.items()})
    reference = CVDataModule(loose, spec, 24, 64).dataset("train")
    order = [next(i for i, r in enumerate(reference.records) if r["path"] == p) for p in rows["path"]]
    want_images, want_masks = spec.collate([reference[i] for i in order])
    assert images.dtype == torch.float32 and torch.equal(images, want_images) and torch.equal(masks, want_masks)
