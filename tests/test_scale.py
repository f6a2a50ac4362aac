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
    # 40 images (not tiny_params' 90) in ~10 KB shards: still several shards per split and two
    # batches per Train worker; the fixed costs (stage processes, Ray starts) are what is left
    params["tasks"]["classification"]["data"].update(storage="shards", shard_size_mb=0.01, num_images=40)
    params["tasks"]["classification"]["train"]["batch_size"] = 8
    return params


def _stored(ws: Path) -> dict[str, bytes]:
    data = ws / "data" / "classification"
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


@pytest.mark.slow  # a second prepare (Ray start + Ray Data manifests): 520 s for both tests on the loaded 2-core machine
def test_prepare_twice_gives_byte_identical_data(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", _sharded)
    dvc(ws, "repro", "prepare@classification")
    first = _stored(ws)
    shutil.rmtree(ws / "data" / "classification")
    dvc(ws, "repro", "--force", "prepare@classification")
    assert _stored(ws) == first  # the same dataset: byte-identical shards, index and manifests


def test_ray_data_input_needs_shards() -> None:
    import yaml

    from components.config import ConfigError, parse_params
    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tasks"]["classification"]["train"]["input"] = "ray_data"
    with pytest.raises(ConfigError, match="set data.storage: shards"):
        parse_params(raw)
    raw["tasks"]["classification"]["data"]["storage"] = "shards"
    assert parse_params(raw).task("classification").train.input == "ray_data"


def test_pipeline_on_shards_trains_through_ray_data(tmp_path: Path) -> None:
    """storage: shards + train.input: ray_data through prepare, validate and train: the Train
    workers stream their dataset shards (2 workers holding both CPUs of a 2-CPU cluster: the
    read tasks take none, or this waits forever). Evaluate reads shards by offset as the
    loader does (tests/test_shards.py)."""
    def edit(params: dict) -> dict:
        params = _sharded(params)
        params["tasks"]["classification"]["train"]["input"] = "ray_data"
        return params

    ws = make_workspace(tmp_path / "ws", edit)
    result = dvc(ws, "repro", "train@classification")
    data = ws / "data" / "classification"
    assert len(list((data / "shards").glob("*.tar"))) > 3 and not (data / "images").exists()
    summary = json.loads((ws / "reports" / "classification" / "validation.json").read_text())
    assert summary["success"] and summary["images"] == 40
    assert "train input: Ray Data dataset shards, 14 rows per worker x 2" in result.stdout, result.stdout[-3000:]
    assert "epoch 2/2" in result.stdout
    assert (ws / "models" / "classification" / "model.pt").stat().st_size > 0


@pytest.mark.slow  # a tiny train + the evaluation twice (in process, 2 Ray actors): minutes on 2 cores; `pytest -m slow -k ray_workers`
def test_evaluation_on_ray_workers_gives_the_in_process_numbers(tmp_path: Path, monkeypatch, capsys) -> None:
    """The suite's grid of passes (clean chunks, corruption x severity, attack batches) on 2 Ray
    workers: the same metrics, rows and curves as in one process, to the last digit."""
    import torch
    import yaml

    from components.config import load_params
    from components.data.datamodule import CVDataModule
    from components.evaluation.suite import run_suite
    from components.paths import StagePaths
    from components.tasks import get_task
    from tests.registry_helpers import make_registry_workspace

    ws = make_registry_workspace(tmp_path, "classification", monkeypatch)
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    task = raw["tasks"]["classification"]
    task["train"]["batch_size"] = 4  # several clean chunks and attack batches: units spread over both workers
    task["evaluate"].update(pgd_steps=2, bootstrap_samples=20,
                            corruptions={n: task["evaluate"]["corruptions"][n] for n in ("gaussian_noise", "rotate", "jpeg")})
    spec, runs = get_task("classification"), {}
    for workers in (0, 2):
        task["evaluate"]["workers"] = workers
        (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        params = load_params(ws / "params.yaml")
        cfg = params.task("classification")
        data = CVDataModule(StagePaths("classification").data, spec, cfg.data.image_size, cfg.train.batch_size)
        torch.manual_seed(0)
        model = spec.build_model(cfg.model.arch, len(data.classes))
        runs[workers] = run_suite(params, "classification", model, data)
    assert "on 2 Ray workers" in capsys.readouterr().out  # the second run did go to Ray
    for key in ("metrics", "fairness", "corruptions", "adversarial"):
        assert runs[2][key] == runs[0][key], key
    assert len(runs[0]["corruptions"]["rows"]) == 15 and len(runs[0]["adversarial"]["curves"]["pgd"]) == 5
