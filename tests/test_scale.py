"""`data.storage: shards` through the pipeline (issue 18): prepare packs the dataset into
deterministic shards and computes its manifests with Ray Data; validate runs the contract on
them; train streams Ray Train dataset shards; evaluate reads the test split by offset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import dvc, make_workspace, tiny_params


def _sharded(params: dict) -> dict:
    params = tiny_params(params)
    params["pipeline"]["tasks"] = ["classification"]
    params["tasks"]["classification"]["data"].update(storage="shards", shard_size_mb=0.02)
    return params


def _stored(ws: Path) -> dict[str, bytes]:
    data = ws / "data" / "classification"
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def test_prepare_and_validate_on_shards(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", _sharded)
    dvc(ws, "repro", "validate@classification")
    data = ws / "data" / "classification"
    assert len(list((data / "shards").glob("*.tar"))) > 3 and not (data / "images").exists()
    summary = json.loads((ws / "reports" / "classification" / "validation.json").read_text())
    assert summary["success"] and summary["images"] == 90


@pytest.mark.slow  # a second prepare (Ray start + Ray Data manifests): 520 s for both tests on the loaded 2-core machine
def test_prepare_twice_gives_byte_identical_data(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", _sharded)
    dvc(ws, "repro", "prepare@classification")
    first = _stored(ws)
    shutil.rmtree(ws / "data" / "classification")
    dvc(ws, "repro", "--force", "prepare@classification")
    assert _stored(ws) == first  # the same dataset: byte-identical shards, index and manifests


@pytest.mark.slow  # Ray Train + Ray Data: not yet seen passing on the shared 2-core machine (see README)
def test_train_and_evaluate_on_shards(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", _sharded)
    result = dvc(ws, "repro", "evaluate@classification")
    assert "Running stage 'evaluate@classification'" in result.stdout
    metrics = json.loads((ws / "reports" / "classification" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
