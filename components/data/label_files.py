"""Label files checked (and CSVs normalised) before any task reads them, so that no
annotation file, however malformed, reaches a reader that would crash on it.

- CSV (`labels.csv`): encodings (UTF-8, UTF-8 with BOM, UTF-16 with BOM; anything else is
  refused with the byte offset), whitespace padding around names and cells, rows with
  missing or extra columns, the columns the rest of the pipeline needs (`path`, `split`).
- COCO JSON (`annotations/<split>.json`): JSON syntax, the three lists, referential
  integrity (image, annotation and category ids unique; every annotation's image and
  category exist: an annotation pointing at no image is reported, not dropped), numeric
  sanity of every bbox (four finite numbers).

Each problem names the file, the row and the fix; `report` makes them one message.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSV_NAME = "labels.csv"
CSV_REQUIRED = ("path", "split")
COCO_DIR = "annotations"
MAX_LISTED = 5  # problems shown per rule; the count says how many more


@dataclass(frozen=True)
class Problem:
    rule: str
    file: str
    row: str
    message: str
    fix: str


def decode_text(data: bytes, name: str) -> tuple[str | None, Problem | None]:
    """Text of a label file by its BOM (UTF-8 otherwise); a Problem when it does not decode."""
    boms = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
    encoding = next((enc for bom, enc in boms if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, Problem("label file encoding", name, f"line {line} (byte {exc.start})",
                             f"not {encoding}: {exc.reason}", "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def read_csv(path: Path, name: str = CSV_NAME) -> tuple[list[dict[str, str]], list[Problem]]:
    """Rows of a label CSV with names and cells stripped, and its problems."""
    text, problem = decode_text(path.read_bytes(), name)
    if problem:
        return [], [problem]
    try:  # newline=None: universal newlines (\r, \r\n and \n exports alike)
        rows = list(csv.reader(io.StringIO(text.replace("\x00", ""), newline=None)))
    except csv.Error as exc:
        return [], [Problem("label file columns", name, f"line {exc.args and getattr(exc, 'line_num', '?')}", f"not CSV: {exc}",
                            "save the file as CSV (comma-separated, fields with commas or quotes quoted)")]
    if not rows:
        return [], [Problem("label file columns", name, "header", "the file is empty", f"write a header row: {','.join(CSV_REQUIRED)},...")]
    header = [h.strip() for h in rows[0]]
    problems = []
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        problems.append(Problem("label file columns", name, "header", f"columns {missing} missing (found {header})",
                                f"name the columns {list(CSV_REQUIRED)} and the task's label column in the first row"))
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append(Problem("label file columns", name, "header", f"duplicate column names {dupes}", "give every column one name"))
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines, as exporters leave at the end
        if len(row) != len(header):
            problems.append(Problem("label file columns", name, f"line {number}",
                                    f"{len(row)} fields, the header has {len(header)}",
                                    "quote fields that contain commas; give every row one value per column"))
            continue
        records.append({h: cell.strip() for h, cell in zip(header, row, strict=True)})
    return records, problems


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """The normalised CSV (UTF-8, no BOM, no padding) the task readers get; a new file, so a
    hard link to the user's own labels.csv is never written through."""
    path.unlink(missing_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]) if rows else list(CSV_REQUIRED))
        writer.writeheader()
        writer.writerows(rows)


def _finite_box(bbox: Any) -> bool:
    return (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))


def _entries(coco: dict, key: str, name: str, problems: list[Problem]) -> list[tuple[int, dict]]:
    value = coco.get(key, [] if key == "annotations" else None)
    if not isinstance(value, list):
        problems.append(Problem("COCO structure", name, key, f"'{key}' is {type(value).__name__}, not a list",
                                f"export COCO JSON with a '{key}' list"))
        return []
    good = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            good.append((i, entry))
        else:
            problems.append(Problem("COCO structure", name, f"{key}[{i}]", f"a {type(entry).__name__}, not an object", "re-export the file"))
    return good


def _unique_ids(entries: list[tuple[int, dict]], key: str, name: str, problems: list[Problem]) -> set:
    seen: dict[Any, int] = {}
    for i, entry in entries:
        ident = entry.get("id")
        if not isinstance(ident, int | str) or isinstance(ident, bool):
            problems.append(Problem("COCO ids unique", name, f"{key}[{i}]", f"id {ident!r} missing or not an integer", f"give every {key} entry an integer id"))
        elif ident in seen:
            problems.append(Problem("COCO ids unique", name, f"{key}[{i}]", f"id {ident} already used by {key}[{seen[ident]}]",
                                    f"give every {key} entry its own id (merged exports often repeat them)"))
        else:
            seen[ident] = i
    return set(seen)


def check_coco(path: Path, name: str) -> list[Problem]:
    """Structure, referential integrity and bbox sanity of one COCO file."""
    text, problem = decode_text(path.read_bytes(), name)
    if problem:
        return [problem]
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Problem("COCO structure", name, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}", "re-export the file (it may be truncated)")]
    except RecursionError:
        return [Problem("COCO structure", name, "-", "JSON nested too deeply", "re-export the file")]
    if not isinstance(coco, dict):
        return [Problem("COCO structure", name, "top level", f"a {type(coco).__name__}, not an object", "export COCO JSON: {images, annotations, categories}")]
    problems: list[Problem] = []
    images, categories = _entries(coco, "images", name, problems), _entries(coco, "categories", name, problems)
    annotations = _entries(coco, "annotations", name, problems)
    image_ids = _unique_ids(images, "images", name, problems)
    category_ids = _unique_ids(categories, "categories", name, problems)
    _unique_ids(annotations, "annotations", name, problems)
    for i, image in images:
        if not isinstance(image.get("file_name"), str) or not image.get("file_name"):
            problems.append(Problem("COCO structure", name, f"images[{i}]", "no file_name", "give every image its file_name (relative to the dataset root)"))
    for i, category in categories:
        if not isinstance(category.get("name"), str) or not category.get("name"):
            problems.append(Problem("COCO structure", name, f"categories[{i}]", "no name", "give every category a name"))
    for i, ann in annotations:
        where = f"annotations[{i}] (id {ann.get('id')})"
        if ann.get("image_id") not in image_ids:
            problems.append(Problem("annotations refer to an image", name, where, f"image_id {ann.get('image_id')!r} is no image of this file",
                                    "export the image entry with its annotations, or remove the annotation (it is not dropped silently)"))
        if ann.get("category_id") not in category_ids:
            problems.append(Problem("annotations refer to a category", name, where, f"category_id {ann.get('category_id')!r} is no category of this file",
                                    "add the category to 'categories' or fix the annotation's category_id"))
        if not _finite_box(ann.get("bbox")):
            problems.append(Problem("box numbers finite", name, where, f"bbox {str(ann.get('bbox'))[:60]} is not four finite numbers",
                                    "write bbox as [x, y, width, height] in pixels"))
    return problems


def check_dataset(root: Path, normalise: bool = True) -> list[Problem]:
    """Check every label file under `root`; with `normalise`, rewrite labels.csv clean
    (UTF-8, stripped) so the task readers see a well-formed file."""
    root = Path(root)
    problems: list[Problem] = []
    labels = root / CSV_NAME
    if labels.is_file():
        rows, found = read_csv(labels)
        problems += found
        if not found and normalise:
            write_csv(labels, rows)
    annotations = root / COCO_DIR
    if annotations.is_dir():
        for path in sorted(annotations.glob("*.json")):
            problems += check_coco(path, f"{COCO_DIR}/{path.name}")
    return problems


def report(problems: list[Problem], root: Path) -> str:
    """One block per rule: how many rows broke it, the first few (file, row, what) and the fix."""
    by_rule: dict[str, list[Problem]] = {}
    for p in problems:
        by_rule.setdefault(p.rule, []).append(p)
    lines = [f"Data contract FAILED for {root}: {len(by_rule)} label-file rules broken (checked before reading)."]
    for rule, found in by_rule.items():
        lines.append(f"  - {rule}: {len(found)} rows")
        lines += [f"      {p.file} {p.row}: {p.message}" for p in found[:MAX_LISTED]]
        lines.append(f"    fix: {found[0].fix}")
    return "\n".join(lines)
