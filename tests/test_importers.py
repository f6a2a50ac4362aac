"""Importers: the built-in shapes exported as COCO (RLE masks, CVAT-style), YOLO and VOC
come back through `data.format: auto` as the same dataset as the canonical path (same
images, splits, boxes, classes and masks), and the format found is named; an unknown
layout lists what was looked for. Polygons are rendered as pycocotools renders them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import importers, shapes
from components.data.importers import coco, examples
from components.errors import DataContractError
from components.stages.prepare import ingest_user_dataset, write_checked_manifest


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> Path:
    cfg = shapes.ShapesConfig(num_images=30, image_size=32, objects_per_image=(1, 2), minority_fraction=0.3, seed=4)
    return shapes.generate(tmp_path_factory.mktemp("canon") / "shapes", cfg)


def boxes_by_image(root: Path) -> dict[str, tuple]:
    out = {}
    for split in ("train", "val", "test"):
        data = json.loads((root / "annotations" / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        for image in data["images"]:
            anns = sorted((names[a["category_id"]], *np.round(a["bbox"], 3)) for a in data["annotations"] if a["image_id"] == image["id"])
            out[Path(image["file_name"]).name] = (split, tuple(anns))
    return out


def masks_by_image(root: Path) -> dict[str, np.ndarray]:
    return {Path(r["path"]).name: np.asarray(Image.open(root / r["mask"]).convert("L"))
            for r in csv.DictReader((root / "labels.csv").open()) if r.get("mask")}


def model_inputs(root: Path, task: str) -> dict[str, list]:
    """What training and evaluation feed the model: per split, (file name, image tensor,
    target) in loader order."""
    from components.data.datamodule import CVDataModule
    from components.tasks import get_task

    data = CVDataModule(root, get_task(task), image_size=32, batch_size=4)
    out = {}
    for split in ("train", "val", "test"):
        dataset = data.dataset(split)
        out[split] = [(Path(r["path"]).name, *dataset[i]) for i, r in enumerate(dataset.records)]
    return out


def same_inputs(got, want) -> bool:
    import torch

    def equal(a, b):
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
        return torch.allclose(torch.as_tensor(a).double(), torch.as_tensor(b).double(), atol=1e-3)

    return all([(n, x.shape) for n, x, _ in got[s]] == [(n, x.shape) for n, x, _ in want[s]]
               and all(equal(x, y) and equal(t, u) for (_, x, t), (_, y, u) in zip(got[s], want[s], strict=True))
               for s in want)


EXPORTS = {"coco": examples.to_coco, "coco-polygons": lambda a, b: examples.to_coco(a, b, polygons=True),
           "yolo": examples.to_yolo, "voc": examples.to_voc}


@pytest.mark.parametrize(("fmt", "found"), [("coco", "COCO JSON"), ("coco-polygons", "COCO JSON"), ("yolo", "YOLO data.yaml"),
                                            ("voc", "Pascal VOC")])
def test_each_export_imports_as_the_canonical_dataset(canonical, tmp_path, fmt, found):
    """... and feeds the model the same images and targets in the same order (training is
    bit-identical from the same inputs, README "How exact", so the metrics are the same)."""
    export = EXPORTS[fmt](canonical, tmp_path / fmt)
    out = tmp_path / "out"
    how = ingest_user_dataset(export, out, "auto", (0.7, 0.15, 0.15), 0, 2)
    assert how.startswith(found) and how.endswith(f"-> {fmt.split('-')[0]}")
    got, want = boxes_by_image(out), boxes_by_image(canonical)
    assert got.keys() == want.keys()
    for name in want:  # YOLO's 6 decimals of normalised coordinates: within 0.001 px
        assert got[name][0] == want[name][0]
        assert [a[0] for a in got[name][1]] == [a[0] for a in want[name][1]]
        assert np.allclose([a[1:] for a in got[name][1]], [a[1:] for a in want[name][1]], atol=1e-3)
    assert json.loads((out / "dataset.json").read_text())["classes"] == json.loads((canonical / "dataset.json").read_text())["classes"]
    if fmt != "yolo":
        got_masks, want_masks = masks_by_image(out), masks_by_image(canonical)
        assert got_masks.keys() == want_masks.keys() and all((got_masks[k] == want_masks[k]).all() for k in want_masks)
    for task in ("detection", "segmentation") if fmt != "yolo" else ("detection",):
        assert write_checked_manifest(out, task, out / "manifest.csv") == 30
        assert same_inputs(model_inputs(out, task), model_inputs(canonical, task)), task


def test_imported_images_are_hard_links_not_copies(canonical, tmp_path):
    export = examples.to_yolo(canonical, tmp_path / "yolo")
    ingest_user_dataset(export, tmp_path / "out", "auto", (0.7, 0.15, 0.15), 0, 2)
    image = next((tmp_path / "out").rglob("*.png"))
    assert image.stat().st_nlink == 2


def test_an_unknown_layout_lists_the_formats_looked_for(tmp_path):
    (tmp_path / "ds" / "pictures").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "pictures" / "a.png")
    with pytest.raises(DataContractError) as caught:
        importers.detect(tmp_path / "ds")
    text = str(caught.value)
    assert all(name in text for name in ("canonical", "imagefolder", "coco", "yolo", "voc")) and "fix:" in text


def test_polygons_and_rle_render_as_pycocotools_renders_them():
    from pycocotools import mask as reference

    polygon = [[2.5, 3.0, 20.0, 4.5, 14.0, 17.5, 5.0, 12.0]]
    expected = reference.decode(reference.merge(reference.frPyObjects(polygon, 24, 28)))
    assert (coco.render(polygon, 24, 28) == expected.astype(bool)).all() and expected.sum() > 50
    rle = reference.encode(np.asfortranarray(expected))
    assert (coco.render({"size": rle["size"], "counts": rle["counts"].decode()}, 24, 28) == expected.astype(bool)).all()


def test_exports_without_splits_get_a_seeded_split_that_keeps_duplicates_together(canonical, tmp_path):
    export = examples.to_coco(canonical, tmp_path / "coco")
    merged = {"images": [], "annotations": [], "categories": None}
    for split in ("train", "val", "test"):  # one CVAT-style instances_default.json, no split
        data = json.loads((export / "annotations" / f"instances_{split}.json").read_text())
        (export / "annotations" / f"instances_{split}.json").unlink()
        offset = len(merged["images"])
        merged["categories"] = data["categories"]
        merged["images"] += [{**im, "id": im["id"] + offset} for im in data["images"]]
        merged["annotations"] += [{**a, "id": len(merged["annotations"]) + i + 1, "image_id": a["image_id"] + offset}
                                  for i, a in enumerate(data["annotations"])]
    twin = merged["images"][0]["file_name"]
    Image.open(export / "images" / twin).resize((40, 40)).save(export / "images" / "twin.png")
    merged["images"].append({**merged["images"][0], "id": 10**5, "file_name": "twin.png", "width": 40, "height": 40})
    (export / "annotations" / "instances_default.json").write_text(json.dumps(merged))
    splits = []
    for run in range(2):
        ingest_user_dataset(export, tmp_path / f"out{run}", "coco", (0.6, 0.2, 0.2), 7, 2)
        rows = {r["path"]: r["split"] for r in csv.DictReader((tmp_path / f"out{run}" / "labels.csv").open())}
        assert rows["images/twin.png"] == rows[f"images/{twin}"]  # the near-duplicate stays with its original
        assert set(rows.values()) == {"train", "val", "test"}
        splits.append(rows)
    assert splits[0] == splits[1]


def test_the_seeded_split_is_stratified_by_class_and_group_and_never_splits_a_near_duplicate(tmp_path):
    """120 distinct pictures in four (class, group) strata, 12 of them with a near-duplicate
    (brightened, re-encoded as JPEG) and 6 with an exact copy: every stratum is split by the
    fractions (within one picture), no two images closer than the threshold sit in two
    splits, and the split is the seed's alone."""
    import imagehash

    from components.data.importers.common import Item, assign_splits
    from components.data.near_duplicates import clusters

    rng = np.random.default_rng(0)
    items, twins = [], []
    for n in range(120):
        label, group = ("a", "b")[n % 2], ("day", "night")[(n // 2) % 2]
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # coarse blocks: a stable phash
        picture = Image.fromarray(blocks).resize((64, 48), Image.NEAREST)
        picture.save(tmp_path / f"{n}.png")
        items.append(Item(f"{n}.png", group=group, labels=[label]))
        if n % 10 == 0:  # a near-duplicate: brighter, lossy
            Image.fromarray(np.clip(np.asarray(picture, np.int16) + 6, 0, 255).astype(np.uint8)).save(tmp_path / f"{n}b.jpg", quality=90)
            items.append(Item(f"{n}b.jpg", group=group, labels=[label]))
            twins.append((f"{n}.png", f"{n}b.jpg"))
        if n % 20 == 5:  # the same picture twice
            picture.save(tmp_path / f"{n}c.png")
            items.append(Item(f"{n}c.png", group=group, labels=[label]))
            twins.append((f"{n}.png", f"{n}c.png"))
    hashes = {i.path: imagehash.phash(Image.open(tmp_path / i.path).convert("RGB")) for i in items}
    assert all(hashes[a] - hashes[b] <= 2 for a, b in twins)  # they are near-duplicates at the threshold
    runs = []
    for _ in range(2):
        fresh = [Item(i.path, group=i.group, labels=i.labels) for i in items]
        assign_splits(tmp_path, fresh, (0.6, 0.2, 0.2), seed=3, near_distance=2)
        runs.append({i.path: i.split for i in fresh})
    split = runs[0]
    assert runs[0] == runs[1] and set(split.values()) == {"train", "val", "test"}
    for a, b in twins:
        assert split[a] == split[b], (a, b)
    paths = list(split)
    for i, a in enumerate(paths):  # the leakage rule validate applies would find nothing
        assert all(split[a] == split[b] for b in paths[i + 1:] if hashes[a] - hashes[b] <= 2)
    for label in ("a", "b"):
        for group in ("day", "night"):
            stratum = [i.path for i in items if i.labels == [label] and i.group == group]
            for name, fraction in zip(("train", "val", "test"), (0.6, 0.2, 0.2), strict=True):
                assert abs(sum(split[p] == name for p in stratum) - fraction * len(stratum)) <= 2, (label, group, name)
    other = [Item(i.path, group=i.group, labels=i.labels) for i in items]
    assign_splits(tmp_path, other, (0.6, 0.2, 0.2), seed=4, near_distance=2)
    assert {i.path: i.split for i in other} != split
    assert sorted(map(sorted, clusters([0b0, 0b11, 0b111, 0b1111111], 2))) == [[0, 1, 2], [3]]  # transitive


def test_class_folders_without_splits_are_found_and_split_by_the_seed(tmp_path):
    """`<class>/<image>`, no split folders: found by `auto`, every image labelled by its
    folder, a seeded split with an exact copy kept beside its original; the manifest reads."""
    rng = np.random.default_rng(1)
    root = tmp_path / "photos"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for n in range(15):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((24, 24), Image.NEAREST).save(root / label / f"{n}.png")
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "3.png").read_bytes())
    out = tmp_path / "out"
    assert ingest_user_dataset(root, out, "auto", (0.6, 0.2, 0.2), 0, 2) == "class folders without splits (2 classes) -> classfolders"
    rows = {r["path"]: r for r in csv.DictReader((out / "labels.csv").open())}
    assert len(rows) == 31 and all(r["label"] == Path(p).parent.name for p, r in rows.items())
    assert rows["cat/copy.png"]["split"] == rows["cat/3.png"]["split"]
    assert {r["split"] for r in rows.values()} == {"train", "val", "test"}
    assert write_checked_manifest(out, "classification", out / "manifest.csv") == 31
    (tmp_path / "lost" / "images").mkdir(parents=True)  # a canonical tree without its label files
    (tmp_path / "lost" / "masks").mkdir()
    for folder in ("images", "masks"):
        Image.new("L", (8, 8)).save(tmp_path / "lost" / folder / "a.png")
    with pytest.raises(DataContractError, match="no known dataset layout"):
        importers.detect(tmp_path / "lost")
