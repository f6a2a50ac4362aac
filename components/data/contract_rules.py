"""The data contract's rules: Great Expectations expectations over three tables, built from
params.yaml's `tasks.<task>.contract` (components/config.py ContractConfig).

- images: manifest.csv, one row per image (components/data/manifest.py);
- annotations: annotations.csv, one row per label, box, mask or mask value;
- stats: the number of images, one row per split, per declared class, per class in train, per (split, group) and
  whether the classes are declared, from `stats_table`.

Every rule has a name (what the report and `contract.skip` use) and the fix a person needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from components.config import ContractConfig

SPLITS = ["train", "val", "test"]
INDEX = {"images": "path", "annotations": "path", "stats": "key"}  # what the report lists
READABLE = "readable==True"
BOX = 'kind=="box"'
MASK_OK = 'kind=="mask" and file_readable==True and image_readable==True'


@dataclass
class Rule:
    """One named rule: one or more expectations on one table, and the fix. After a check:
    `failures`, the first few failed rows (GX's unexpected rows: the table's INDEX column and
    the checked ones), `rows`, how many distinct such rows failed, and `keys`, how many
    distinct INDEX values (files, stats keys) they name."""

    name: str
    table: str
    expectations: list[Any]
    fix: str
    failures: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    keys: int = 0


def _where(condition: str) -> dict[str, str]:
    return {"row_condition": condition, "condition_parser": "pandas"}


def image_rules(cfg: ContractConfig) -> list[Rule]:
    import great_expectations as gx

    E, size = gx.expectations, f"{cfg.min_size}..{cfg.max_size} px (contract.min_size/max_size)"
    return [Rule(name, "images", list(exps), fix) for name, exps, fix in [
        ("paths inside the dataset root", [E.ExpectColumnValuesToBeInSet(column="in_root", value_set=[True])],
         "list images by a path relative to the dataset root, without '..', and copy linked files in"),
        ("non-empty files", [E.ExpectColumnValuesToBeBetween(column="bytes", min_value=1)],
         "re-export the zero-byte files or remove them from the annotations"),
        ("images decode", [E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True], **_where("in_root==True"))],
         "re-export or remove the broken files (the manifest's 'error' column says why each failed)"),
        ("known split", [E.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS)],
         "set split to one of train/val/test in the annotations"),
        ("allowed format", [E.ExpectColumnValuesToBeInSet(column="format", value_set=cfg.formats, **_where(READABLE))],
         f"convert images to one of {cfg.formats} (or extend contract.formats)"),
        ("allowed channels", [E.ExpectColumnValuesToBeInSet(column="channels", value_set=cfg.channels, **_where(READABLE))],
         f"convert images to {cfg.channels} channels, e.g. RGBA -> RGB (or extend contract.channels)"),
        ("width in bounds", [E.ExpectColumnValuesToBeBetween(column="width", min_value=cfg.min_size, max_value=cfg.max_size, **_where(READABLE))],
         f"resize images to {size}"),
        ("height in bounds", [E.ExpectColumnValuesToBeBetween(column="height", min_value=cfg.min_size, max_value=cfg.max_size, **_where(READABLE))],
         f"resize images to {size}"),
        ("annotated", [E.ExpectColumnValuesToBeBetween(column="annotations", min_value=cfg.min_annotations)],
         f"add the missing annotations (at least {cfg.min_annotations} per image: contract.min_annotations)"),
        # the table-wide rules as row-level ones over dataset-wide columns (data/contract_columns.py),
        # so that a manifest is checked chunk by chunk
        ("unique paths", [E.ExpectColumnValuesToBeBetween(column="path_copies", max_value=1)],
         "list each image once in the annotations"),
        ("no duplicate images in a split", [E.ExpectColumnValuesToBeBetween(column="split_copies", max_value=1, **_where(READABLE))],
         "remove the copies: identical images in one split over-weight those samples"),
        ("no images shared between splits", [E.ExpectColumnValuesToBeBetween(column="hash_splits", max_value=1)],
         "keep each image (same bytes) in one split only: shared images leak test data into training"),
        ("no near-duplicates across splits", [E.ExpectColumnValuesToBeInSet(column="near_duplicate", value_set=[""])],
         f"keep each picture in one split only, whatever its encoding or size (perceptual hash within "
         f"{cfg.near_duplicate_distance} bits, contract.near_duplicate_distance; validation.json names each twin)"),
    ]] + [Rule("enough images", "stats",  # a count over all chunks: a stats row, listed with the image rules
               [E.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_images, **_where('stat=="images"'))],
               f"provide at least {cfg.min_images} images (contract.min_images)")]


def annotation_rules(cfg: ContractConfig, classes: list[str] | None, mask_values: list[int] | None) -> list[Rule]:
    """Rules on labels, boxes and masks; class rules only when the classes are declared."""
    import great_expectations as gx

    E = gx.expectations
    boxes_in = 'kind=="box" and image_readable==True'
    rules = [
        ("box x2 > x1", [E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="x2", column_B="x1", **_where(BOX))],
         "fix the box coordinates: COCO bbox is [x, y, width, height] with width > 0"),
        ("box y2 > y1", [E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="y2", column_B="y1", **_where(BOX))],
         "fix the box coordinates: COCO bbox is [x, y, width, height] with height > 0"),
        ("boxes inside the image", [
            E.ExpectColumnValuesToBeBetween(column="x1", min_value=0, **_where(BOX)),
            E.ExpectColumnValuesToBeBetween(column="y1", min_value=0, **_where(BOX)),
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="image_width", column_B="x2", or_equal=True, **_where(boxes_in)),
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="image_height", column_B="y2", or_equal=True, **_where(boxes_in)),
        ], "clip the boxes to the image, or check that they refer to the right image and scale"),
        ("box area above minimum", [E.ExpectColumnValuesToBeBetween(column="area", min_value=cfg.min_box_area, **_where(BOX))],
         f"remove boxes smaller than {cfg.min_box_area} px^2 (contract.min_box_area)"),
        ("annotation files inside the root", [E.ExpectColumnValuesToBeInSet(column="file_in_root", value_set=[True], **_where('kind=="mask"'))],
         "name mask files by a path relative to the dataset root, without '..'"),
        ("annotation files readable", [E.ExpectColumnValuesToBeInSet(column="file_readable", value_set=[True], **_where('kind=="mask" and file_in_root==True'))],
         "add the missing mask files or re-export the broken ones (annotations.csv 'file_error' says why)"),
        ("mask size equals image size", [
            E.ExpectColumnPairValuesToBeEqual(column_A="file_width", column_B="image_width", **_where(MASK_OK)),
            E.ExpectColumnPairValuesToBeEqual(column_A="file_height", column_B="image_height", **_where(MASK_OK)),
        ], "resize masks with nearest-neighbour to their image's size (or pair each mask with its image)"),
        ("mask mode", [E.ExpectColumnValuesToBeInSet(column="file_mode", value_set=cfg.mask_modes, **_where('kind=="mask" and file_readable==True'))],
         f"save masks as 8-bit class-index PNGs ({cfg.mask_modes}; contract.mask_modes)"),
    ]
    if classes is not None:
        rules.insert(0, ("labels in the class list", [E.ExpectColumnValuesToBeInSet(column="label", value_set=classes, **_where('kind=="label" or kind=="box"'))],
                         f"use only the declared classes {classes} (dataset.json 'classes' or contract.classes)"))
    if mask_values is not None:
        rules.append(("mask values declared", [E.ExpectColumnValuesToBeInSet(column="value", value_set=mask_values, **_where('kind=="mask_value"'))],
                      f"masks may hold only {mask_values[0]}..{mask_values[-2]} (classes) and {mask_values[-1]} (ignore): remap the others"))
    return [Rule(name, "annotations", exps, fix) for name, exps, fix in rules]


def stats_rules(cfg: ContractConfig) -> list[Rule]:
    import great_expectations as gx

    E, (lo, hi), (slo, shi) = gx.expectations, cfg.class_fraction, cfg.split_fraction
    return [Rule(name, "stats", [exp], fix) for name, exp, fix in [
        ("no empty split", E.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_split_images, **_where('stat=="split"')),
         f"give every split at least {cfg.min_split_images} images (a missing or misplaced annotation file, labels.csv or annotations/<split>.json, empties splits)"),
        ("split fractions", E.ExpectColumnValuesToBeBetween(column="fraction", min_value=slo, max_value=shi, **_where('stat=="split"')),
         f"re-split so each split holds {slo:.0%}..{shi:.0%} of the images (contract.split_fraction)"),
        ("class balance", E.ExpectColumnValuesToBeBetween(column="fraction", min_value=lo, max_value=hi, **_where('stat=="class"')),
         f"collect or resample so each class is {lo:.0%}..{hi:.0%} of the annotations (contract.class_fraction)"),
        ("every class in train", E.ExpectColumnValuesToBeBetween(column="count", min_value=1, **_where('stat=="train class"')),
         "annotate examples of every class in the train split (a class seen only in val/test cannot be learned: "
         "move some of its images to train, or drop the class from the class list)"),
        ("class list declared", E.ExpectColumnValuesToBeBetween(column="count", min_value=1, **_where('stat=="declared"')),
         'declare the classes of the mask values 1..C: dataset.json {"classes": ["<class 1>", ...]} (without '
         "background) or tasks.<task>.contract.classes"),
        ("groups in every split", E.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_group_images, **_where('stat=="group"')),
         f"put at least {cfg.min_group_images} images of every sensitive group in every split (contract.min_group_images)"),
    ]]


def stats_table(images: int, splits: Mapping[str, int], groups: Mapping[tuple[str, str], int],
                labels: Mapping[tuple[str, str], int], classes: list[str], declared: bool = True) -> pd.DataFrame:
    """Rows (stat, key, count, fraction) from counts accumulated over the manifests' chunks
    (images; images per split and per (split, group); class labels per (split, label): one
    per label, box or mask value): the number of images, per split, per class (of `classes`),
    per class in train, per split/group (0 when absent), and one `declared` row (count 0 when
    a set that needs a class list has none)."""
    rows = [("images", "all images", int(images), 1.0)]
    n = max(images, 1)
    rows += [("split", split, int(splits.get(split, 0)), splits.get(split, 0) / n) for split in SPLITS]
    per_class, in_train = Counter(), Counter()
    for (split, label), count in labels.items():
        per_class[label] += count
        if split == "train":
            in_train[label] += count
    total = max(sum(per_class[c] for c in classes), 1)
    rows += [("class", c, int(per_class[c]), per_class[c] / total) for c in classes]
    rows += [("train class", c, int(in_train[c]), in_train[c] / total) for c in classes]
    for group in sorted({g for _, g in groups} - {""}):  # "" = no sensitive attribute
        for split in SPLITS:
            count = int(groups.get((split, group), 0))
            rows.append(("group", f"{split}/{group}", count, count / max(int(splits.get(split, 0)), 1)))
    rows.append(("declared", "classes", int(declared), 1.0))
    return pd.DataFrame(rows, columns=["stat", "key", "count", "fraction"])


def build_rules(cfg: ContractConfig, classes: list[str] | None, mask_values: list[int] | None) -> list[Rule]:
    """The suite's rules minus `contract.skip`; an unknown name in skip is an error."""
    rules = image_rules(cfg) + annotation_rules(cfg, classes, mask_values) + stats_rules(cfg)
    unknown = set(cfg.skip) - {r.name for r in rules}
    if unknown:
        from components.config import ConfigError

        raise ConfigError(f"contract.skip names no rule: {sorted(unknown)}; rules: {[r.name for r in rules]}")
    return [r for r in rules if r.name not in cfg.skip]
