"""The promotion gate, audit trail and rollback on a real MLflow registry (SQLite), for
every registered task.

Candidates are untrained models (random weights, no training): a real checkpoint logged as
the real pyfunc in a real run. The promote stage re-evaluates the champion on the test
split for the change checks; a candidate's own metrics JSON is the evaluate stage's output,
here the model's real test metrics, shifted where a test needs a better or worse candidate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from components.cli import main
from components.config import ConfigError
from components.registry.audit import alias_version
from components.registry.record import FILTER_TAGS, RECORD_TAG, read_record
from components.tasks import TASKS
from tests.registry_helpers import (
    log_candidate,
    make_registry_workspace,
    promote_candidate,
    set_gate,
    split_images,
)

pytestmark = pytest.mark.parametrize("task", list(TASKS))


def gate_for(task: str, min_delta: float = 0.0) -> dict:
    monitor = TASKS[task].monitor
    return {"cold_start": "promote", "thresholds": [{"metric": monitor, "min": 0.0}],
            "changes": [{"metric": monitor, "direction": "higher", "min_delta": min_delta}]}


def store(ws: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{ws / 'mlruns.db'}")


def verdict_of(client: MlflowClient, name: str, version: str) -> dict:
    tags = read_record(client, client.get_model_version(name, version))
    return {"passed": tags["cvops.gate.passed"], "baseline": tags["cvops.gate.baseline_version"],
            "checks": json.loads(tags["cvops.gate.checks"])}


def test_gate_promotes_rejects_and_rolls_back(task, tmp_path, monkeypatch, capsys):
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    set_gate(ws, task, gate_for(task))
    client, name, monitor = store(ws), f"cvops-{task}", TASKS[task].monitor

    first = log_candidate(ws, task, seed=0)
    v1 = promote_candidate(ws, task, first)  # cold start: value thresholds only
    assert v1["passed"] and v1["baseline_version"] is None
    assert [c["metric"] for c in v1["checks"]] == [monitor]
    assert alias_version(client, name, "champion") == v1["version"] == "1"
    version = client.get_model_version(name, "1")
    tags = read_record(client, version)
    assert tags["cvops.mlflow_run_id"] == first.run_id and tags["cvops.task"] == task
    assert tags["cvops.params_hash"] and tags["cvops.version.torch"] and tags["cvops.git_dirty"] in ("true", "false")
    # the model page's versions table: the few tags one filters on, the rest in the record artifact
    assert set(version.tags) == {*FILTER_TAGS, RECORD_TAG}, sorted(version.tags)
    assert version.tags[RECORD_TAG] == "registry/v1.json" and version.tags["cvops.gate.passed"] == "true"
    assert client.search_model_versions(f"name='{name}' and tags.`cvops.data_hash` = '{version.tags['cvops.data_hash']}'")

    worse = log_candidate(ws, task, seed=1, metrics={**first.metrics, monitor: first.metrics[monitor] - 0.05})
    v2 = promote_candidate(ws, task, worse)
    assert not v2["passed"] and v2["reason"] == f"failed checks: {monitor}"
    change = v2["checks"][1]
    # the champion measured as at its promotion: its stored evaluation, same key (data, evaluate params, code)
    assert change["baseline"] == pytest.approx(first.metrics[monitor], abs=1e-6) and not change["passed"]
    assert v2["champion_source"].startswith("stored evaluation reused") and change["interval"] is not None
    assert alias_version(client, name, "champion") == "1"
    assert alias_version(client, name, "challenger") == "2"
    assert verdict_of(client, name, "2")["passed"] == "false"
    assert "Promotion gate" in client.get_model_version(name, "2").description

    # the champion's weights (seed 0): the paired bootstrap has no spread, the reported +0.05 decides
    better = log_candidate(ws, task, seed=0, metrics={**first.metrics, monitor: first.metrics[monitor] + 0.05})
    v3 = promote_candidate(ws, task, better)
    assert v3["passed"] and v3["baseline_version"] == "1" and v3["previous_champion"] == "1"
    assert alias_version(client, name, "champion") == "3"

    missing = log_candidate(ws, task, seed=3, metrics={k: v for k, v in first.metrics.items() if k != monitor})
    v4 = promote_candidate(ws, task, missing)
    assert not v4["passed"] and all(c["value"] is None and not c["passed"] for c in v4["checks"])
    assert alias_version(client, name, "champion") == "3"

    assert main(["rollback", task]) == 0
    assert alias_version(client, name, "champion") == "1"
    assert main(["rollback", task, "--to", "2"]) == 1, "a version that failed the gate cannot be champion"
    capsys.readouterr()
    assert main(["history", task, "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    champion_moves = [(e["what"], e["from"], e["to"]) for e in entries if e["alias"] == "champion"]
    assert champion_moves == [("promote", None, "1"), ("promote", "1", "3"), ("rollback", "3", "1")]
    assert [e["to"] for e in entries if e["alias"] == "challenger"] == ["1", "2", "3", "4"]
    assert main(["history", task]) == 0
    out = capsys.readouterr().out
    assert "rollback" in out and "v2 gate: failed checks" in out and "| check | rule | champion | candidate | interval | pass |" in out


def test_no_thresholds_is_an_error_before_anything_is_registered(task, tmp_path, monkeypatch):
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    set_gate(ws, task, {"cold_start": "promote", "thresholds": []})
    candidate = log_candidate(ws, task, seed=0)
    with pytest.raises(ConfigError, match=f"tasks.{task}.gate.thresholds is empty"):
        promote_candidate(ws, task, candidate)
    assert store(ws).search_registered_models() == []
    assert not (ws / "reports" / task / "gate.json").exists()


def test_cold_start_refuse_registers_but_does_not_promote(task, tmp_path, monkeypatch):
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    set_gate(ws, task, {**gate_for(task), "cold_start": "refuse"})
    verdict = promote_candidate(ws, task, log_candidate(ws, task, seed=0))
    assert not verdict["passed"] and "cold_start" in verdict["reason"]
    client = store(ws)
    assert alias_version(client, f"cvops-{task}", "challenger") == "1"
    assert not any(mv.aliases and "champion" in mv.aliases for mv in client.search_model_versions(f"name='cvops-{task}'"))


def test_predict_writes_predictions_and_overlays(task, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from components.data.datamodule import dataset_classes
    from components.paths import StagePaths

    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    set_gate(ws, task, gate_for(task))
    promote_candidate(ws, task, log_candidate(ws, task, seed=0))
    images = split_images(ws, task, 2)
    folder = ws / "inputs"
    folder.mkdir()
    for p in images[1:]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "notes.png").write_text("not an image")  # unreadable: named, skipped, exit 2
    capsys.readouterr()  # what the fixtures printed
    code = main(["predict", task, str(images[0]), str(folder), str(ws / "nowhere" / "*.png"), "--out", "preds"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "notes.png" in err and "not a readable image" in err and "nowhere" in err and "Traceback" not in err
    records = json.loads(Path("preds/predictions.json").read_text())
    assert [r["image"] for r in records] == [str(images[0]), *(str(folder / p.name) for p in images[1:])]
    lines = out.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [r["image"] for r in records]
    assert all(line.split(": ", 1)[1] for line in lines[:-1]), "one non-empty summary per image"
    assert "1 input(s) skipped" not in lines[-1] and "2 input(s) skipped" in lines[-1]
    assert all(Path(r["overlay"]).stat().st_size > 0 for r in records)
    if "mask" in records[0]:  # segmentation: index and colour PNGs, the per-class pixel count in the JSON
        root = ws / StagePaths(task).data
        names = dataset_classes(root, TASKS[task], TASKS[task].read_records(root))
        for r in records:
            with Image.open(r["mask"]["index"]) as index, Image.open(r["image"]) as image:
                assert index.mode == "L" and index.size == image.size
                values, counts = np.unique(np.asarray(index), return_counts=True)
            assert {names[int(c)]: int(n) for c, n in zip(values, counts, strict=True)} == r["pixels"]
            assert Path(r["mask"]["colour"]).stat().st_size > 0
    for r in records:  # detection: the operating point (score >= 0.5, at most 20 boxes)
        dets = r.get("detections", [])
        assert len(dets) <= 20 and all(d["score"] >= 0.5 for d in dets)
