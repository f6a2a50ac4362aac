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


def test_failed_contract_stops_dvc_repro_before_training(tmp_path):
    """End to end: a user dataset with a corrupt image stops `dvc repro` at validate (exit
    code 3); nothing downstream runs and no model is produced."""
    from components.data import shapes
    from tests.conftest import dvc, tiny_params

    source = shapes.generate(tmp_path / "user_data", shapes.ShapesConfig(num_images=60, image_size=24))
    (source / "images" / "00005.png").write_bytes(b"not a png")

    def user_dataset(params: dict) -> dict:
        params = tiny_params(params)
        params["tasks"][TASK]["data"].update(source="path", path=str(source))
        return params

    ws = make_workspace(tmp_path / "ws", edit=user_dataset)
    result = dvc(ws, "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "images decode: 1 rows; e.g. ['images/00005.png']" in output
    assert "exited with 3" in output
    assert "Running stage 'train@" not in output and not (ws / "models" / TASK / "model.pt").exists()
