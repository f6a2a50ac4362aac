"""The data contract (Great Expectations): a clean dataset passes; broken ones stop the
stage with the failed rule, the file and the fix named."""

import json
from pathlib import Path

import pytest

from components.config import load_params
from components.paths import StagePaths
from components.prepare import run as prepare
from components.validate import DataContractError
from components.validate import run as validate
from tests.conftest import make_workspace

TASK = "classification"


@pytest.fixture
def prepared(tmp_path, monkeypatch) -> Path:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    prepare(load_params(), TASK)
    return ws


def test_clean_dataset_passes_and_writes_summary(prepared):
    summary = validate(load_params(), TASK)
    assert summary["success"] and summary["failed_rules"] == 0
    assert json.loads(StagePaths(TASK).validation.read_text())["images"] == summary["images"]


def _break(paths: StagePaths, column: str, value: str, row: int = 1) -> str:
    lines = paths.manifest.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    paths.manifest.write_text("\n".join(lines) + "\n")
    return cells[0]


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [("readable", "False", "images decode"), ("channels", "4", "allowed channels"),
     ("split", "holdout", "known split"), ("width", "20000", "width in bounds")],
)
def test_broken_row_is_caught_by_the_right_rule(prepared, column, value, rule):
    path = _break(StagePaths(TASK), column, value)
    with pytest.raises(DataContractError) as info:
        validate(load_params(), TASK)
    report = str(info.value)
    assert f"- {rule}: 1 rows" in report and path in report and "fix:" in report


def test_truncated_image_fails_the_decode_rule(prepared):
    paths = StagePaths(TASK)
    image = paths.data / "images" / "00003.png"
    image.write_bytes(image.read_bytes()[:40])
    from components.data.manifest import write_manifest
    from components.tasks import get_task

    write_manifest(paths.data, get_task(TASK), paths.manifest)
    with pytest.raises(DataContractError, match=r"images decode: 1 rows; e.g. \['images/00003.png'\]"):
        validate(load_params(), TASK)


def test_duplicate_image_across_splits_is_caught(prepared):
    paths = StagePaths(TASK)
    lines = paths.manifest.read_text().splitlines()
    sha = lines[0].split(",").index("sha256")
    first, second = lines[1].split(","), lines[2].split(",")
    second[sha] = first[sha]
    lines[2] = ",".join(second)
    paths.manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataContractError, match="no duplicate images: 2 rows"):
        validate(load_params(), TASK)
