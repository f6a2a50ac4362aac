"""Sharded storage (`data.storage: shards`): the prepared dataset as WebDataset tar shards plus
a Parquet index, so DVC tracks ~10^3 files instead of 10^6.

Layout of a sharded data/<task>/:

    shards/<split>-000000.tar     WebDataset samples, one per record, in path order
    shards.parquet                one row per stored file: path, key, split, shard, offset, size, sha256
    dataset.json, labels.csv,     the small metadata files stay loose: `TaskSpec.read_records`
    annotations/<split>.json      reads them unchanged

A sample's key is its image path with dots replaced (WebDataset splits a member name at the
first dot); its members are `json` (the record) and one `<field>.<ext>` per file the record
names (`path` -> `image.png`, segmentation's `mask` -> `mask.png`).

**Deterministic**: records sorted by (split, path); webdataset's TarWriter with fixed headers
(mtime 0, uid/gid 0, user/group "cvops", mode 0444, USTAR); a shard is cut once it holds
`shard_size_mb` of data. The same dataset gives byte-identical shards and index, so DVC skips
an unchanged dataset. **When one image changes**: its shard is rewritten; if its size changed,
the cut points of the later shards of the same split move too, so those are rewritten as well
(the other splits' shards are untouched). Content-defined cut points (cut at keys whose hash
hits a pattern) would confine a change to one or two shards; not done yet.

Random access: the index holds each member's byte offset in its shard, so `ShardRoot` opens
any stored file by its original relative path without reading the shard (evaluation, the
map-style loader). Streaming (Ray Data) reads whole shards in order.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from components.tasks.base import TaskSpec

SHARDS_DIR = "shards"
INDEX = "shards.parquet"
TAR_HEADER = {"user": "cvops", "group": "cvops", "mode": 0o444, "mtime": 0.0, "format": "USTAR_FORMAT"}
INDEX_SCHEMA = pa.schema([
    ("path", pa.string()), ("key", pa.string()), ("member", pa.string()), ("split", pa.string()),
    ("shard", pa.string()), ("offset", pa.int64()), ("size", pa.int64()), ("sha256", pa.string()),
])


def is_sharded(root: Path) -> bool:
    return (Path(root) / INDEX).exists()


def sample_key(path: str) -> str:
    return path.replace(".", "_")


def record_files(record: dict[str, Any], root: Path) -> dict[str, str]:
    """{field: relative path} of the files a record names: its image and any other string field
    that is a file under root (segmentation's mask)."""
    files = {"image": record["path"]}
    for field, value in record.items():
        if field != "path" and isinstance(value, str) and value and (root / value).is_file():
            files[field] = value
    return files


def _member(field: str, rel: str) -> str:
    return f"{field}{Path(rel).suffix.lower() or '.bin'}"


def write_shards(root: Path, spec: TaskSpec, shard_size_mb: float, remove_loose: bool = True) -> int:
    """Pack the loose dataset under `root` into shards + index (see the module docstring);
    returns the shard count. With `remove_loose` the packed files are deleted afterwards."""
    root = Path(root)
    records = sorted(spec.read_records(root), key=lambda r: (r["split"], r["path"]))
    out = root / SHARDS_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    rows: dict[str, list] = {name: [] for name in INDEX_SCHEMA.names}
    packed: list[Path] = []
    shards = 0
    for split in sorted({r["split"] for r in records}):
        pattern = str(out / f"{split}-%06d.tar")
        # ShardWriter starts a new shard once `maxsize` bytes are written; maxcount is no limit
        with wds.ShardWriter(pattern, maxsize=shard_size_mb * 1e6, maxcount=10**12, encoder=False, verbose=0,
                             **TAR_HEADER) as writer:
            for record in (r for r in records if r["split"] == split):
                key, files = sample_key(record["path"]), record_files(record, root)
                sample = {"__key__": key, "json": json.dumps(record, sort_keys=True).encode()}
                for field, rel in files.items():
                    data = (root / rel).read_bytes()
                    sample[_member(field, rel)] = data
                    rows["path"].append(rel)
                    rows["key"].append(key)
                    rows["member"].append(_member(field, rel))
                    rows["split"].append(split)
                    rows["sha256"].append(hashlib.sha256(data).hexdigest())
                    rows["size"].append(len(data))
                    packed.append(root / rel)
                writer.write(sample)
                for _ in files:
                    rows["shard"].append(Path(writer.fname).name)
            shards += writer.shard
    table = pa.table({k: v for k, v in rows.items() if k != "offset"} | {"offset": [0] * len(rows["path"])},
                     schema=INDEX_SCHEMA)
    table = table.set_column(INDEX_SCHEMA.get_field_index("offset"), "offset", _offsets(out, table))
    pq.write_table(table, root / INDEX, compression="zstd")
    if remove_loose:
        for path in packed:
            path.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in packed}, key=lambda p: -len(p.parts)):
            if folder != root and folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
    return shards


def _offsets(out: Path, table: pa.Table) -> pa.Array:
    """Each indexed member's data offset in its shard, read back from the tar headers."""
    where: dict[tuple[str, str], int] = {}
    for shard in sorted(set(table["shard"].to_pylist())):
        with tarfile.open(out / shard) as tar:
            for info in tar:
                where[(shard, info.name)] = info.offset_data
    names = zip(table["shard"].to_pylist(), table["key"].to_pylist(), table["member"].to_pylist(), strict=True)
    return pa.array([where[(s, f"{k}.{m}")] for s, k, m in names], pa.int64())


def shard_paths(root: Path, split: str | None = None) -> list[str]:
    pattern = f"{split}-*.tar" if split else "*.tar"
    return [str(p.resolve()) for p in sorted((Path(root) / SHARDS_DIR).glob(pattern))]


@dataclass(frozen=True)
class _Location:
    shard: str
    offset: int
    size: int


class ShardRoot:
    """The dataset root of a sharded dataset, for code written against loose files:
    `root / "images/00001.png"` is the stored file's bytes (a BytesIO, which PIL opens), read
    by seeking to its offset in its shard. Other names (metadata) resolve to the real file."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root)
        index = pq.read_table(self.path / INDEX, columns=["path", "shard", "offset", "size"]).to_pydict()
        self.index = {p: _Location(s, o, n) for p, s, o, n in
                      zip(index["path"], index["shard"], index["offset"], index["size"], strict=True)}

    def __truediv__(self, rel: str) -> io.BytesIO | Path:
        where = self.index.get(str(rel))
        if where is None:
            return self.path / rel
        with (self.path / SHARDS_DIR / where.shard).open("rb") as f:
            f.seek(where.offset)
            return io.BytesIO(f.read(where.size))

    def __fspath__(self) -> str:
        return str(self.path)


class MemberRoot:
    """A root over files held in memory ({relative path: bytes}): a streamed batch's samples."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def __truediv__(self, rel: str) -> io.BytesIO:
        return io.BytesIO(self.files[str(rel)])


def dataset_root(root: Any) -> Path | ShardRoot | MemberRoot:
    """What `ImageDataset` reads files through: a loose dataset's folder, a ShardRoot for a
    sharded one, or an already open root."""
    if isinstance(root, ShardRoot | MemberRoot):
        return root
    return ShardRoot(root) if is_sharded(root) else Path(root)
