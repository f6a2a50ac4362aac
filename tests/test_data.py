"""Built-in datasets: determinism, the three formats from one scene list, digits export."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import digits, shapes
from components.data.manifest import write_manifest
from components.tasks import get_task


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_cfg() -> shapes.ShapesConfig:
    return shapes.ShapesConfig(num_images=40, image_size=48, objects_per_image=(1, 3), seed=7)


def test_same_seed_same_bytes(tmp_path, small_cfg):
    a = tree_digest(shapes.generate(tmp_path / "a", small_cfg))
    b = tree_digest(shapes.generate(tmp_path / "b", small_cfg))
    assert a == b


@pytest.mark.slow  # spawns two interpreters: ~3-7 s
def test_worker_processes_write_the_same_bytes_as_threads(tmp_path, small_cfg, monkeypatch):
    """A large dataset renders in spawned processes, a few chunks in flight, spooled in order:
    forced here on 40 images in chunks of 7, the bytes equal the threaded run's."""
    threads = tree_digest(shapes.generate(tmp_path / "threads", small_cfg))
    monkeypatch.setattr(shapes, "PROCESS_MIN_IMAGES", 0)
    monkeypatch.setattr(shapes, "CHUNK", 7)
    assert tree_digest(shapes.generate(tmp_path / "processes", small_cfg)) == threads


def test_different_seed_different_images(tmp_path, small_cfg):
    a = tree_digest(shapes.generate(tmp_path / "a", small_cfg))
    other = shapes.ShapesConfig(**{**small_cfg.__dict__, "seed": 8})
    b = tree_digest(shapes.generate(tmp_path / "b", other))
    images = [k for k in a if k.startswith("images/")]
    assert sum(a[k] != b[k] for k in images) == len(images)


def test_three_formats_describe_the_same_scenes(tmp_path, small_cfg):
    root = shapes.generate(tmp_path / "s", small_cfg)
    rows = list(csv.DictReader((root / "labels.csv").open()))
    coco = {s: json.loads((root / "annotations" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert sum(len(c["images"]) for c in coco.values()) == len(rows) == small_cfg.num_images
    boxes_by_file = {}
    for c in coco.values():
        names = {im["id"]: im["file_name"] for im in c["images"]}
        for ann in c["annotations"]:
            boxes_by_file.setdefault(names[ann["image_id"]], []).append(ann)
    for row in rows:
        mask = np.asarray(Image.open(root / row["mask"]))
        for ann in boxes_by_file[row["path"]]:
            x, y, w, h = ann["bbox"]
            inside = mask[y : y + h, x : x + w]
            assert (inside == ann["category_id"]).any(), "each box covers pixels of its class in the mask"
        largest = max(boxes_by_file[row["path"]], key=lambda a: a["area"])
        assert shapes.CLASSES[largest["category_id"] - 1] == row["label"]


def test_night_group_is_a_minority_present_in_every_split(tmp_path):
    cfg = shapes.ShapesConfig(num_images=300, image_size=24, minority_fraction=0.2, seed=3)
    rows = list(csv.DictReader((shapes.generate(tmp_path / "s", cfg) / "labels.csv").open()))
    night = [r for r in rows if r["group"] == "night"]
    assert 0.1 < len(night) / len(rows) < 0.3
    assert {r["split"] for r in night} == {"train", "val", "test"}


def test_digits_export_is_the_real_sklearn_data(tmp_path):
    from sklearn.datasets import load_digits

    root = digits.export(tmp_path / "d", (0.7, 0.15, 0.15), seed=0)
    rows = list(csv.DictReader((root / "labels.csv").open()))
    real = load_digits()
    assert len(rows) == len(real.target)
    first = np.asarray(Image.open(root / rows[0]["path"]), dtype=float) * 16 / 255
    assert np.abs(first - real.images[0]).max() < 0.05
    assert rows[0]["label"] == str(real.target[0]) and rows[0]["group"] == ""


def test_manifest_has_one_row_per_image_with_hash_and_geometry(tmp_path, small_cfg):
    root = shapes.generate(tmp_path / "s", small_cfg)
    count = write_manifest(root, get_task("classification"), root / "manifest.csv")
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    assert count == len(rows) == small_cfg.num_images
    row = rows[0]
    assert row["readable"] == "True" and row["width"] == "48" and row["channels"] == "3"
    assert row["sha256"] == hashlib.sha256((root / row["path"]).read_bytes()).hexdigest()


def first_train_batch(root: Path, seed: int, workers: int):
    from components.data.datamodule import CVDataModule

    data = CVDataModule(root, get_task("classification"), image_size=32, batch_size=8,
                        augment=["hflip", "affine", "color"], num_workers=workers, seed=seed)
    return next(iter(data.train_dataloader()))


def test_train_batches_order_and_augmentation_follow_the_seed_alone(tmp_path):
    """Shuffle order and augmentations in worker processes come from the datamodule's seed,
    not from whatever state the process's global RNG is in."""
    import torch

    root = shapes.generate(tmp_path / "data", shapes.ShapesConfig(num_images=40, image_size=32, seed=7))
    images, labels = first_train_batch(root, seed=1, workers=2)
    torch.rand(10)  # the global RNG moves on: the next loader must not care
    again_images, again_labels = first_train_batch(root, seed=1, workers=2)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    other_images, _ = first_train_batch(root, seed=2, workers=2)
    assert not torch.equal(images, other_images)


@pytest.mark.slow  # three DVC commands and a workspace: ~50 s on the shared 2 cores (load 14), too much for the default suite
def test_editing_one_image_of_a_user_dataset_flags_prepare_in_dvc_status(tmp_path, monkeypatch):
    """data.path is prepare's DVC dependency (through the committed link sources/<task>):
    after prepare, `dvc status` is clean; replacing one image of the user's dataset (as an
    editor saves it) flags prepare@classification with that dependency and nothing else."""
    import json
    import os

    from conftest import dvc, make_workspace, tiny_params

    from components.config import load_params
    from components.stages import prepare

    user = shapes.generate(tmp_path / "user", shapes.ShapesConfig(num_images=30, image_size=16, seed=3))

    def edit(params):
        params = tiny_params(params)
        params["tasks"]["classification"]["data"].update(source="path", path=str(user), format="canonical")
        return params

    ws = make_workspace(tmp_path / "ws", edit)
    monkeypatch.chdir(ws)
    prepare.run(load_params(ws / "params.yaml"), "classification")  # what `dvc repro` runs, in-process
    assert os.readlink(ws / "sources" / "classification") == str(user.resolve())
    dvc(ws, "commit", "-f", "prepare@classification")
    assert "up to date" in dvc(ws, "status", "prepare@classification").stdout
    image = user / "images" / "00007.png"
    edited = Image.open(image).rotate(90)
    edited.save(tmp_path / "edited.png")
    os.replace(tmp_path / "edited.png", image)  # a new file under the old name, as editors save
    status = json.loads(dvc(ws, "status", "--json", "prepare@classification").stdout)
    changed = [entry["changed deps"] for entry in status["prepare@classification"] if "changed deps" in entry]
    assert changed == [{"sources/classification": "modified"}], status


@pytest.mark.parametrize("source", ["shapes", pytest.param("digits", marks=pytest.mark.slow)])  # digits: 2 x 1,797 images
def test_built_in_splits_keep_near_duplicates_together_for_the_leakage_rule(tmp_path, source):
    """The contract's near-duplicate rule (validate, on the manifest's phash) applies to the
    built-in data too: the generators keep each cluster of close scenes in one split. At
    200 scenes of 16 px, 3 cross-split pairs lie within 8 bits when the split ignores them."""
    from components.stages.validate import read_manifest

    def leaks(root: Path, distance: int) -> int:
        write_manifest(root, get_task("classification"), root / "manifest.csv")
        return int(read_manifest(root / "manifest.csv", distance)["near_duplicate"].ne("").sum())

    if source == "digits":  # the real 8x8 digits: 4 pairs within 2 bits across a plain stratified split
        kept, plain = digits.export(tmp_path / "kept", (0.7, 0.15, 0.15), 42), digits.export(tmp_path / "plain", (0.7, 0.15, 0.15), 42, None)
        distance = 2
    else:
        cfg = shapes.ShapesConfig(num_images=200, image_size=16, seed=1, near_duplicate_distance=8)
        kept = shapes.generate(tmp_path / "kept", cfg)
        plain = shapes.generate(tmp_path / "plain", shapes.ShapesConfig(**{**cfg.__dict__, "near_duplicate_distance": None}))
        distance = 8
    assert leaks(plain, distance) > 0 and leaks(kept, distance) == 0
    splits = [r["split"] for r in csv.DictReader((kept / "labels.csv").open())]
    assert abs(splits.count("train") / len(splits) - 0.7) < 0.02


@pytest.mark.parametrize("distance", [0, 1, 2, 5, 9])
def test_the_near_duplicate_index_finds_exactly_the_pairs_all_pairs_find(distance):
    """The pigeonhole index (what keeps 10^6 images tractable) against the all-pairs
    reference, on hashes built the way real data clusters: exact copies, pictures a few bits
    apart, and spread ones."""
    from components.data.near_duplicates import close_pairs, clusters, twins_across

    rng = np.random.default_rng(distance)
    centres = rng.integers(0, 2**63, size=60, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=60, dtype=np.uint64)
    flips = np.zeros(600, dtype=np.uint64)
    for row, count in enumerate(rng.integers(0, 8, size=600)):
        for bit in rng.choice(64, size=count, replace=False):
            flips[row] |= np.uint64(1) << np.uint64(bit)
    bits = np.concatenate([np.repeat(centres, 10) ^ flips, rng.integers(0, 2**63, size=200, dtype=np.uint64)])
    rng.shuffle(bits)
    near = np.bitwise_count(bits[:, None] ^ bits[None, :]) <= distance
    expected = {(i, j) for i, j in zip(*np.nonzero(np.triu(near, 1)), strict=True)}
    found = [(i, j) for a, b in close_pairs(bits, distance) for i, j in zip(a.tolist(), b.tolist(), strict=True)]
    assert len(found) == len(set(found)) and set(found) == expected and expected  # each pair once, none missed

    splits = rng.choice(np.array(["train", "val", "test"]), size=len(bits))
    across = near & (splits[:, None] != splits[None, :])
    assert np.array_equal(twins_across(bits, splits, distance), np.where(across.any(axis=1), np.argmax(across, axis=1), -1))
    groups = clusters(bits.tolist(), distance)
    assert sorted(i for g in groups for i in g) == list(range(len(bits)))
    label = {i: k for k, g in enumerate(groups) for i in g}
    assert all(label[i] == label[j] for i, j in expected)  # every close pair shares a cluster
