"""Sharded storage (components/data/shards.py, ray_data.py): deterministic shards, random
access by offset, and the Ray Data manifests equal to the loose path's (the reference)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from components.data import manifest, shapes, shards
from components.tasks import get_task

CONFIG = shapes.ShapesConfig(num_images=40, image_size=16, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sharded(path: Path, task: str = "segmentation", size_mb: float = 0.005) -> Path:
    shapes.generate(path, CONFIG)
    shards.write_shards(path, get_task(task), size_mb)
    return path


def test_same_dataset_gives_byte_identical_shards(tmp_path: Path) -> None:
    a, b = _sharded(tmp_path / "a"), _sharded(tmp_path / "b")
    assert len(shards.shard_paths(a)) > 3  # several shards per split, so cut points are exercised
    assert _files(a / "shards") == _files(b / "shards")
    assert (a / shards.INDEX).read_bytes() == (b / shards.INDEX).read_bytes()
    assert not (a / "images").exists() and not (a / "masks").exists()  # packed files are removed


def test_index_streamed_in_row_groups_is_the_same_table_with_exact_offsets(tmp_path: Path, monkeypatch) -> None:
    """write_shards writes the index a row group at a time and takes the offsets while writing:
    the same rows as one group, deterministic, each offset where tarfile finds the member's data."""
    import pyarrow.parquet as pq

    whole = _sharded(tmp_path / "whole")
    monkeypatch.setattr(shards, "BATCH_ROWS", 7)
    a, b = _sharded(tmp_path / "a"), _sharded(tmp_path / "b")
    assert pq.ParquetFile(a / shards.INDEX).metadata.num_row_groups > 1
    assert pq.read_table(a / shards.INDEX).equals(pq.read_table(whole / shards.INDEX))
    assert (a / shards.INDEX).read_bytes() == (b / shards.INDEX).read_bytes()
    _assert_offsets_where_tarfile_finds_the_data(a)


def _assert_offsets_where_tarfile_finds_the_data(root: Path) -> None:
    import tarfile

    import pyarrow.parquet as pq

    found = {}
    for path in shards.shard_paths(root):
        with tarfile.open(path) as tar:
            found |= {(Path(path).name, info.name): info.offset_data for info in tar}
    rows = pq.read_table(root / shards.INDEX).to_pylist()
    assert [r["offset"] for r in rows] == [found[(r["shard"], f"{r['key']}.{r['member']}")] for r in rows]


def test_offsets_are_exact_for_names_whose_tar_headers_are_longer(tmp_path: Path) -> None:
    """A member name over 100 characters or not ASCII goes in a PAX record; at ~480 characters
    (nested folders) `<key>.image.png` needs a PAX block more than `<key>.json`: the sample's
    headers differ in length, so write_shards rebuilds them to place the data (for headers of
    one length it divides)."""
    import tarfile

    root = shapes.generate(tmp_path / "s", shapes.ShapesConfig(num_images=6, image_size=16, seed=3))
    labels = (root / "labels.csv").read_text()
    deep = f"images/{'d' * 200}/{'e' * 200}/{'f' * 67}.png"
    key, header = shards.sample_key(deep), []
    for member in ("json", "image.png"):
        info = tarfile.TarInfo(f"{key}.{member}")
        info.mtime, info.size = 0.0, 1
        header.append(len(info.tobuf(tarfile.PAX_FORMAT)))
    assert header[0] < header[1]  # what this test is about
    for old, new in (("images/00001.png", deep), ("images/00002.png", "images/nuit-été.png")):
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        (root / old).rename(root / new)
        labels = labels.replace(old, new)
    (root / "labels.csv").write_text(labels)
    shards.write_shards(root, get_task("classification"), 16.0)
    _assert_offsets_where_tarfile_finds_the_data(root)


def test_changed_image_rewrites_its_shard_and_later_ones_of_its_split_only(tmp_path: Path) -> None:
    a = _sharded(tmp_path / "a")
    b = tmp_path / "b"
    shapes.generate(b, CONFIG)
    test_image = next(r["path"] for r in get_task("segmentation").read_records(b) if r["split"] == "test")
    Image.new("RGB", (16, 16), (1, 2, 3)).save(b / test_image)
    shards.write_shards(b, get_task("segmentation"), 0.005)
    before, after = _files(a / "shards"), _files(b / "shards")
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert changed and all(name.startswith("test-") for name in changed)


def test_shard_root_reads_every_stored_file_as_the_loose_bytes(tmp_path: Path) -> None:
    loose = shapes.generate(tmp_path / "loose", CONFIG)
    root = shards.ShardRoot(_sharded(tmp_path / "s"))
    for record in get_task("segmentation").read_records(loose):
        for rel in (record["path"], record["mask"]):
            assert (root / rel).read() == (loose / rel).read_bytes()


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("task", ["classification", *(pytest.param(t, marks=pytest.mark.slow) for t in ("detection", "segmentation"))])
def test_ray_data_manifests_equal_the_loose_ones(tmp_path: Path, local_ray, task: str) -> None:
    from components.data import ray_data

    spec = get_task(task)
    loose = shapes.generate(tmp_path / "loose", CONFIG)
    manifest.write_manifest(loose, spec, loose / "manifest.csv")
    sharded = _sharded(tmp_path / "s", task)
    info = ray_data.write_manifest(sharded, spec, sharded / "manifest.csv")
    assert info["images"] == CONFIG.num_images
    for name, keys in (("manifest.csv", ["path"]), ("annotations.csv", ["path", "kind", "label", "value", "x1"])):
        read = [pd.read_csv(root / name, dtype=str, keep_default_na=False).sort_values(keys).reset_index(drop=True)
                for root in (loose, sharded)]
        pd.testing.assert_frame_equal(*read)
    stats = ray_data.contract_stats(sharded, spec)
    frame = pd.read_csv(loose / "manifest.csv")
    assert stats["images"] == len(frame) and stats["bytes"] == frame["bytes"].sum()
    assert stats["split_group_images"] == {f"{s}/{g}": n for (s, g), n in frame.groupby(["split", "group"]).size().items()}
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("task", ["classification", pytest.param("segmentation", marks=pytest.mark.slow)])
def test_map_style_loader_reads_a_sharded_dataset(tmp_path: Path, task: str) -> None:
    """What validation during training and the evaluate stage read: images (and masks) by
    offset in their shard, the same tensors as from the loose files."""
    import torch

    from components.data.datamodule import CVDataModule

    loose = shapes.generate(tmp_path / "loose", CONFIG)
    sharded = _sharded(tmp_path / "s", task)
    a, b = (CVDataModule(root, get_task(task), 16, 4).dataset("test") for root in (loose, sharded))
    assert len(a) == len(b) > 0
    for (x, y), (u, v) in zip((a[i] for i in range(3)), (b[i] for i in range(3)), strict=True):
        assert torch.equal(x, u) and str(y) == str(v)
