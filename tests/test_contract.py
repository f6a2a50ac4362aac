"""The data contract against a corpus of broken datasets, each generated here from the shapes
data: every kind of breakage is caught by the rule meant for it and named in the report with
an example file. Detection and segmentation use their data mixins directly, so these tests
do not depend on the task models."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import ContractConfig
from components.data import shapes
from components.data.manifest import write_manifest
from components.stages.validate import report, validate_dataset
from components.tasks import TASKS
from components.tasks.base import TaskSpec


def spec_for(task: str) -> TaskSpec:
    return TASKS[task]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    cfg = shapes.ShapesConfig(num_images=60, image_size=32, objects_per_image=(1, 2), minority_fraction=0.3, seed=2)
    return shapes.generate(tmp_path_factory.mktemp("clean") / "shapes", cfg)


def contract(root: Path, task: str, cfg: ContractConfig | None = None) -> tuple[dict, str]:
    spec = spec_for(task)
    write_manifest(root, spec, root / "manifest.csv", workers=2)
    rules, summary = validate_dataset(root, root / "manifest.csv", spec, cfg or ContractConfig())
    return summary, report(rules, root / "manifest.csv")


def rows(root: Path, name: str = "labels.csv") -> list[dict]:
    return list(csv.DictReader((root / name).open()))


def write_rows(root: Path, table: list[dict], name: str = "labels.csv") -> None:
    with (root / name).open("w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def first(root: Path, split: str) -> dict:
    return next(r for r in rows(root) if r["split"] == split)


def edit_rows(root: Path, change: Callable[[dict], None]) -> None:
    table = rows(root)
    for row in table:
        change(row)
    write_rows(root, table)


def edit_coco(root: Path, split: str, change: Callable[[dict], None]) -> str:
    path = root / "annotations" / f"{split}.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    first_image = coco["annotations"][0]["image_id"]
    return next(im["file_name"] for im in coco["images"] if im["id"] == first_image)


# ---- the corpus: each breaks a copy of the clean dataset and returns a file the report must name
def truncated_image(root):
    path = first(root, "train")["path"]
    (root / path).write_bytes((root / path).read_bytes()[:60])
    return path


def zero_byte_file(root):
    path = first(root, "val")["path"]
    (root / path).write_bytes(b"")
    return path


def not_an_image(root):
    path = first(root, "test")["path"]
    (root / path).write_text("path,label\nthis is a CSV saved as .png\n")
    return path


def wrong_channels(root):
    path = first(root, "train")["path"]
    Image.open(root / path).convert("RGBA").save(root / path)
    return path


def unknown_label(root):
    path = first(root, "train")["path"]
    edit_rows(root, lambda r: r.update(label="hexagon") if r["path"] == path else None)
    return path


def box_outside_image(root):
    def change(coco):
        coco["annotations"][0]["bbox"] = [20, 4, 30, 10]  # x2 = 50 on a 32 px image
    return edit_coco(root, "train", change)


def zero_area_box(root):
    def change(coco):
        coco["annotations"][0]["bbox"][2] = 0
    return edit_coco(root, "val", change)


def undeclared_mask_value(root):
    row = first(root, "train")
    mask = np.array(Image.open(root / row["mask"]))
    mask[0, :4] = 7  # shapes declares 3 classes: 0..3 and 255 are allowed
    Image.fromarray(mask).save(root / row["mask"])
    return row["path"]


def mask_wrong_size(root):
    row = first(root, "test")
    Image.open(root / row["mask"]).resize((16, 16), Image.NEAREST).save(root / row["mask"])
    return row["path"]


def duplicate_across_splits(root):
    train, test = first(root, "train")["path"], first(root, "test")["path"]
    shutil.copyfile(root / train, root / test)
    return test


def duplicate_in_split(root):
    a, b = [r["path"] for r in rows(root) if r["split"] == "train"][:2]
    shutil.copyfile(root / a, root / b)
    return b


def missing_mask_file(root):
    row = first(root, "val")
    (root / row["mask"]).unlink()
    return row["path"]


def missing_coco_file(root):
    (root / "annotations" / "val.json").unlink()
    return "val"


def empty_split(root):
    edit_rows(root, lambda r: r.update(split="train") if r["split"] == "test" else None)
    return "test"


def path_escapes_root(root):
    outside = root.parent / "outside.png"
    shutil.copyfile(root / first(root, "train")["path"], outside)  # exists: it must still not be read
    victim = first(root, "train")["path"]
    edit_rows(root, lambda r: r.update(path="../outside.png") if r["path"] == victim else None)
    return "../outside.png"


def symlink_out_of_root(root):
    outside = root.parent / "linked.png"
    path = first(root, "val")["path"]
    shutil.move(root / path, outside)
    (root / path).symlink_to(outside)
    return path


def mask_path_escapes_root(root):
    row = first(root, "test")
    edit_rows(root, lambda r: r.update(mask="/etc/hostname") if r["path"] == row["path"] else None)
    return row["path"]


def group_missing_from_split(root):
    edit_rows(root, lambda r: r.update(group="day") if r["split"] == "val" else None)
    return "val/night"


def class_missing(root):
    edit_rows(root, lambda r: r.update(label="circle") if r["label"] == "triangle" else None)
    return "triangle"


CORPUS = [  # (breakage, task, every rule it must break: no fewer, no more)
    (truncated_image, "classification", {"images decode"}),
    (zero_byte_file, "classification", {"non-empty files", "images decode"}),
    (not_an_image, "classification", {"images decode"}),
    (wrong_channels, "classification", {"allowed channels"}),  # with contract.channels [1, 3]
    (unknown_label, "classification", {"labels in the class list"}),
    (box_outside_image, "detection", {"boxes inside the image"}),
    (zero_area_box, "detection", {"box x2 > x1", "box area above minimum"}),
    (undeclared_mask_value, "segmentation", {"mask values declared"}),
    (mask_wrong_size, "segmentation", {"mask size equals image size"}),
    (duplicate_across_splits, "classification", {"no images shared between splits", "no near-duplicates across splits"}),
    (duplicate_in_split, "classification", {"no duplicate images in a split"}),
    (missing_mask_file, "segmentation", {"annotation files readable"}),
    (missing_coco_file, "detection", {"no empty split", "split fractions", "groups in every split"}),
    (empty_split, "classification", {"no empty split", "split fractions", "groups in every split"}),
    (path_escapes_root, "classification", {"paths inside the dataset root"}),
    (symlink_out_of_root, "segmentation", {"paths inside the dataset root"}),
    (mask_path_escapes_root, "segmentation", {"annotation files inside the root"}),
    (group_missing_from_split, "segmentation", {"groups in every split"}),
    (class_missing, "classification", {"class balance", "every class in train"}),
]


@pytest.mark.parametrize(("breakage", "task", "expected"), CORPUS, ids=[c[0].__name__ for c in CORPUS])
def test_broken_dataset_is_caught_by_the_right_rule(clean, tmp_path, breakage, task, expected):
    root = shutil.copytree(clean, tmp_path / "ds")
    example = breakage(root)
    summary, text = contract(root, task, ContractConfig(channels=[1, 3]) if breakage is wrong_channels else None)
    assert not summary["success"]
    assert set(summary["failures"]) == expected, text
    line = next(line for line in text.splitlines() if line.startswith(f"  - {breakage_rule(expected)}:"))
    assert example in line, text
    assert "fix:" in text


def breakage_rule(expected: set[str]) -> str:
    """The rule whose report line must show the example (the most specific of the set)."""
    for name in ("non-empty files", "box area above minimum", "no empty split"):
        if name in expected:
            return name
    return next(iter(expected))


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_clean_shapes_pass_for_every_task(clean, tmp_path, task):
    root = shutil.copytree(clean, tmp_path / "ds")
    summary, text = contract(root, task)
    assert summary["success"], text
    assert summary["failed_rules"] == 0 and summary["images"] == 60


def test_every_rule_can_be_skipped_and_unknown_names_are_refused(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    truncated_image(root)
    summary, _ = contract(root, "classification", ContractConfig(skip=["images decode"]))
    assert summary["success"] and summary["rules"] == 29
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="contract.skip names no rule: \\['images decodes'\\]"):
        contract(root, "classification", ContractConfig(skip=["images decodes"]))


# ---- what annotation tools get wrong: caught before any reader runs (prepare's label-file checks)
from components.errors import DataContractError, exit_code  # noqa: E402
from components.stages.prepare import check_user_dataset, write_checked_manifest  # noqa: E402


def checked(root: Path, task: str) -> str:
    """The message of the contract error that prepare raises for `root`."""
    with pytest.raises(DataContractError) as caught:
        write_checked_manifest(root, task, root / "manifest.csv")
    assert exit_code(caught.value) == 3
    return str(caught.value)


def coco(root: Path, split: str = "train") -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def save_coco(root: Path, data: dict, split: str = "train") -> None:
    (root / "annotations" / f"{split}.json").write_text(json.dumps(data))


def test_coco_annotation_pointing_at_no_image_is_reported_not_dropped(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    data = coco(root)
    data["annotations"][3]["image_id"] = 10**6
    data["annotations"][4]["category_id"] = 99
    save_coco(root, data)
    text = checked(root, "detection")
    assert "annotations refer to an image: 1 rows" in text and "annotations/train.json annotations[3]" in text
    assert "image_id 1000000 is no image" in text and "annotations refer to a category: 1 rows" in text
    assert "fix:" in text


def test_coco_duplicate_ids_and_non_finite_boxes_are_named(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    data = coco(root, "val")
    data["images"][1]["id"] = data["images"][0]["id"]
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    data["annotations"][2]["bbox"] = [1, 2, float("nan"), 4]
    data["annotations"][5]["bbox"] = [1, 2, 3]
    save_coco(root, data, "val")
    text = checked(root, "detection")
    assert "COCO ids unique: 2 rows" in text and "images[1]: id" in text and "already used by images[0]" in text
    assert "box numbers finite: 2 rows" in text and "annotations[2]" in text and "annotations[5]" in text


def test_truncated_or_wrong_coco_json_is_a_contract_error(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    path = root / "annotations" / "test.json"
    path.write_text(path.read_text()[:500])
    assert "annotations/test.json line 1 column" in checked(root, "detection")
    path.write_text(json.dumps({"images": {}, "categories": []}))
    assert "'images' is dict, not a list" in checked(root, "detection")


def test_bom_padding_and_utf16_labels_are_read_as_the_clean_file(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    text = (root / "labels.csv").read_text()
    padded = "\n".join(" , ".join(cell for cell in line.split(",")) for line in text.splitlines()) + "\n\n"
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + padded.encode())
    write_checked_manifest(root, "classification", root / "manifest.csv")
    assert (root / "labels.csv").read_text() == text.replace("\r\n", "\n") or rows(root) == list(csv.DictReader(text.splitlines()))
    summary, report_text = contract(root, "classification")
    assert summary["success"], report_text
    (root / "labels.csv").write_bytes(text.encode("utf-16"))
    write_checked_manifest(root, "classification", root / "manifest.csv")
    assert rows(root) == list(csv.DictReader(text.splitlines()))


def test_missing_extra_columns_and_bad_encoding_are_named_with_the_line(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    lines = (root / "labels.csv").read_text().splitlines()
    lines[4] += ",extra"
    lines[7] = lines[7].rsplit(",", 1)[0]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    text, n = checked(root, "classification"), lines[0].count(",") + 1
    assert "label file columns: 2 rows" in text and f"labels.csv line 5: {n + 1} fields, the header has {n}" in text
    assert f"labels.csv line 8: {n - 1} fields" in text
    (root / "labels.csv").write_bytes("\n".join([lines[0], "images/0.png,caf\xe9,train,day,m.png"]).encode("latin-1"))
    assert "label file encoding" in (text := checked(root, "classification")) and "line 2" in text and "UTF-8" in text
    (root / "labels.csv").write_text("file,label,split\n")
    assert "columns ['path'] missing" in checked(root, "classification")


def test_a_column_the_task_needs_is_named(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    edit_rows(root, lambda r: r.pop("mask"))
    assert "column or key 'mask' missing" in checked(root, "segmentation")


def test_links_that_loop_or_name_a_directory_are_refused(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    (root / "images" / "loop.png").symlink_to(root / "images" / "loop.png")
    with pytest.raises(DataContractError, match="loop.png: symbolic link .* loops or names nothing"):
        check_user_dataset(root)
    (root / "images" / "loop.png").unlink()
    (root / "images" / "up").symlink_to(root)
    with pytest.raises(DataContractError, match="up: symbolic link .* names a directory"):
        check_user_dataset(root)


def test_a_class_only_in_an_eval_split_is_refused(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    (root / "dataset.json").unlink()  # found classes, not declared ones
    edit_rows(root, lambda r: r.update(label="hexagon") if r["split"] == "val" and r["label"] == "circle" else None)
    summary, text = contract(root, "classification")
    assert "every class in train" in summary["failures"], text
    assert "hexagon" in next(line for line in text.splitlines() if "every class in train" in line)


def test_segmentation_without_a_class_list_says_to_declare_it(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    (root / "dataset.json").unlink()
    summary, text = contract(root, "segmentation")
    assert set(summary["failures"]) == {"class list declared"}, text
    assert "dataset.json" in text and "collect or resample" not in text


def test_the_same_picture_re_encoded_in_another_split_is_leakage(clean, tmp_path):
    root = shutil.copytree(clean, tmp_path / "ds")
    train, test = first(root, "train")["path"], first(root, "test")["path"]
    Image.open(root / train).resize((40, 40), Image.BICUBIC).save(root / test)  # other bytes, same picture
    summary, text = contract(root, "classification")
    assert "no near-duplicates across splits" in summary["failures"], text
    assert "no images shared between splits" not in summary["failures"]
    assert test in text and "perceptual hash" in text
