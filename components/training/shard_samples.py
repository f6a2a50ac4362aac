"""A Ray Data datasource over tar shards that cuts samples out by the member offsets of the
shards' Parquet index (components/data/shards.py), for the streamed training input
(components/training/ray_input.py).

Why not `read_webdataset`: it parses each tar in Python and yields one single-row pandas block
per sample, ~0.2 ms of CPU per image (measured: benchmarks/bench_train_input.py). Here a
shard is read once front to back, each member is a slice of a big read, and a read task
yields one pyarrow block per `BLOCK` samples. A light module on purpose: the read tasks import
it (and nothing of torch or Lightning) in the Ray workers that run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.datasource import FileBasedDatasource

BLOCK = 512  # samples per block: amortises the per-block cost, small enough to stream (~1 MB at 32 px)


class ShardSamples(FileBasedDatasource):
    """One row per sample of the given shards: `path` (the image's relative path, the key to
    its record) and one binary column per member field (`image`, segmentation's `mask`).
    File shuffling (`shuffle=FileShuffleConfig(seed)`) is FileBasedDatasource's own."""

    def __init__(self, paths: list[str], index: str, **kwargs: Any) -> None:
        super().__init__(paths, file_extensions=["tar"], **kwargs)
        self.index = index

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        samples = shard_samples(self.index, Path(path).name)
        fields = sorted({field for sample in samples for field in sample})
        position = 0  # the stream is read once, front to back: tar headers are read past
        for start in range(0, len(samples), BLOCK):
            chunk = samples[start:start + BLOCK]
            first = min(o for sample in chunk for _, o, _ in sample.values())
            f.read(first - position)
            data = f.read(max(o + n for sample in chunk for _, o, n in sample.values()) - first)
            position = first + len(data)
            columns = {"path": pa.array([sample["image"][0] for sample in chunk], pa.string())}
            for field in fields:
                columns[field] = pa.array([data[s[field][1] - first:s[field][1] - first + s[field][2]]
                                           if field in s else None for s in chunk], pa.binary())
            yield pa.table(columns)


def shard_samples(index: str, shard: str) -> list[dict[str, tuple[str, int, int]]]:
    """The samples of one shard in stored order, each {field: (path, offset, size)} of its members."""
    rows = pq.read_table(index, columns=["path", "key", "member", "offset", "size"],
                         filters=[("shard", "==", shard)]).sort_by("offset").to_pydict()
    samples: list[dict[str, tuple[str, int, int]]] = []
    last = None
    for rel, key, member, offset, size in zip(rows["path"], rows["key"], rows["member"], rows["offset"], rows["size"],
                                              strict=True):
        if key != last:  # a sample's members are adjacent in its shard
            samples.append({})
            last = key
        samples[-1][member.split(".", 1)[0]] = (rel, offset, size)
    return samples
