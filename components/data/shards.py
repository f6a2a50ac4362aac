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
(mtime 0, uid/gid 0, user/group "cvops", mode 0444; the tars come out PAX, each member with a
`mtime=0.0` record: webdataset 1.0.2 does not hand its `format` to tarfile); a shard is cut
once it holds `shard_size_mb` of data; the index has a fixed number of rows per row group.
The same dataset gives byte-identical shards and index, so DVC skips an unchanged dataset.
**When one image changes**: its shard is rewritten; if its size changed, the cut points of the
later shards of the same split move too, so those are rewritten as well (the other splits'
shards are untouched; the index is one file, always rewritten). Content-defined cut points
(cut at keys whose hash hits a pattern) would confine a change to one or two shards; not done.

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


BATCH_ROWS = 16_384  # index rows per Parquet row group: the writer holds one batch, not the dataset


def write_shards(root: Path, spec: TaskSpec, shard_size_mb: float, remove_loose: bool = True) -> int:
    """Pack the loose dataset under `root` into shards + index (see the module docstring);
    returns the shard count. With `remove_loose` the packed files are deleted afterwards.

    Streams (issue 18: 10^6 images in a bounded memory): one split at a time, one sample at a
    time; the index is written a row group per BATCH_ROWS rows, its offsets taken while the tar
    is written; the files to remove are read back from the index. What stays in memory is the
    task's records (read_records, sorted) and one batch of index rows."""
    root = Path(root)
    records = spec.read_records(root)
    records.sort(key=lambda r: (r["split"], r["path"]))
    out = root / SHARDS_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    partial = root / f"{INDEX}.partial"  # renamed once complete: a broken run leaves no index (is_sharded)
    (root / INDEX).unlink(missing_ok=True)
    shards = 0
    with pq.ParquetWriter(partial, INDEX_SCHEMA, compression="zstd") as index:
        rows = _Rows(index)
        for split in sorted({r["split"] for r in records}):
            shards += _write_split(root, out, split, (r for r in records if r["split"] == split), shard_size_mb, rows)
        rows.flush()
    partial.replace(root / INDEX)
    if remove_loose:
        _remove_packed(root)
    return shards


class _Rows:
    """Index rows, flushed to the Parquet writer a row group at a time (fixed size: deterministic)."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer, self.columns = writer, {name: [] for name in INDEX_SCHEMA.names}

    def add(self, **row: Any) -> None:
        for name, value in row.items():
            self.columns[name].append(value)
        if len(self.columns["path"]) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.columns["path"]:
            self.writer.write_batch(pa.RecordBatch.from_pydict(self.columns, schema=INDEX_SCHEMA))
            self.columns = {name: [] for name in INDEX_SCHEMA.names}


def _data_offsets(tar: tarfile.TarFile, key: str, start: int) -> dict[str, int]:
    """{member: data offset} of the sample just written from `start` (the stream's offset
    before it): tarfile keeps the TarInfo of each member it added (cleared after every sample,
    so these are this sample's, in order); each member took its header (512 bytes or more,
    with a PAX header) and its data padded to 512 bytes. Exact, without re-reading the tar.
    The headers' total is what the stream grew by less the data; members whose names are short
    ASCII (and sizes < 8 GiB) have headers of one length, so each is that total / n; only
    other names pay for rebuilding their headers (tobuf: half of write_shards' CPU before)."""
    padded = [-(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for info in tar.members]
    headers_total = tar.offset - start - sum(padded)
    if all(len(info.name) <= tarfile.LENGTH_NAME and info.name.isascii() and info.size < 8**11 for info in tar.members):
        headers = [headers_total // len(tar.members)] * len(tar.members)
    else:
        headers = [len(info.tobuf(tar.format, tar.encoding, tar.errors)) for info in tar.members]
    assert sum(headers) == headers_total, (key, headers, headers_total)  # a header length not as assumed
    offset, where = start, {}
    for info, header, data in zip(tar.members, headers, padded, strict=True):
        where[info.name[len(key) + 1:]] = offset + header
        offset += header + data
    tar.members.clear()  # else tarfile holds every TarInfo it wrote: ~10^5 per 256 MB shard of small images
    return where


def _write_split(root: Path, out: Path, split: str, records, shard_size_mb: float, rows: _Rows) -> int:
    pattern = str(out / f"{split}-%06d.tar")
    # ShardWriter starts a new shard once `maxsize` bytes are written; maxcount is no limit
    with wds.ShardWriter(pattern, maxsize=shard_size_mb * 1e6, maxcount=10**12, encoder=False, verbose=0,
                         **TAR_HEADER) as writer:
        tar, end = None, 0
        for record in records:
            key, files = sample_key(record["path"]), record_files(record, root)
            sample = {"__key__": key, "json": json.dumps(record, sort_keys=True).encode()}
            for field, rel in files.items():
                sample[_member(field, rel)] = (root / rel).read_bytes()
            writer.write(sample)  # may start a new shard first (a new tar, from offset 0)
            start = end if writer.tarstream.tarstream is tar else 0
            tar = writer.tarstream.tarstream
            data_at, end = _data_offsets(tar, key, start), tar.offset
            shard = Path(writer.fname).name
            for field, rel in files.items():
                member, data = _member(field, rel), sample[_member(field, rel)]
                rows.add(path=rel, key=key, member=member, split=split, shard=shard, offset=data_at[member],
                         size=len(data), sha256=hashlib.sha256(data).hexdigest())
        return writer.shard


def _remove_packed(root: Path) -> None:
    """Delete the packed loose files (read back from the index, a batch at a time), then the
    folders that held them, once empty."""
    folders: set[Path] = set()
    for batch in pq.ParquetFile(root / INDEX).iter_batches(batch_size=BATCH_ROWS, columns=["path"]):
        for rel in batch.column(0).to_pylist():
            (root / rel).unlink(missing_ok=True)
            folders.add((root / rel).parent)
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        if folder != root and folder.exists() and not any(folder.iterdir()):
            folder.rmdir()


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
