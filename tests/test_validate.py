"""The validate stage end to end: a clean dataset of every registered task passes, with Data
Docs and an MLflow run; a broken one exits 3 with the report, and `dvc repro` stops there.
(The rules themselves, against a corpus of broken datasets: tests/test_contract.py.)"""

import json
import os
from pathlib import Path

import mlflow
import pytest

from components import cli
from components.config import load_params
from components.paths import StagePaths
from components.stages.prepare import run as prepare
from components.stages.validate import DataContractError
from components.stages.validate import run as validate
from components.tasks import TASKS
from tests.conftest import dvc, make_workspace, tiny_params


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ws


def validate_runs(task: str) -> list:
    from components.runtime import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri(load_params()))
    return mlflow.search_runs(experiment_names=[f"cvops/{task}"], filter_string="tags.stage = 'validate'",
                              output_format="list")


@pytest.mark.parametrize("task", list(TASKS))
def test_clean_dataset_passes_with_docs_and_mlflow_run(workspace, task):
    prepare(load_params(), task)
    summary = validate(load_params(), task)
    paths = StagePaths(task)
    assert summary["success"] and summary["failed_rules"] == 0
    assert json.loads(paths.validation.read_text())["images"] == summary["images"] == 90
    numbers = json.loads(paths.validation_metrics.read_text())  # dvc.yaml's metric: no strings for `dvc metrics show`
    assert numbers["success"] == 1 and numbers["images"] == 90 and "failures" not in numbers
    assert all(type(v) in (int, float) for v in numbers.values())
    docs = paths.validation.parent / "data_docs"
    assert (docs / "index.html").exists()
    assert sorted(p.name for p in (docs / "validations").iterdir()) == [f"{task}_{t}" for t in ("annotations", "images", "stats")]
    assert_offline_data_docs(docs)
    (run,) = validate_runs(task)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "data_docs")}
    assert "data_docs/index.html" in artifacts and run.data.tags["contract"] == "passed"


def assert_offline_data_docs(docs: Path) -> None:
    """No page loads a script, stylesheet or image from the internet; what they load from the
    vendored copies exists (tests/test_pipeline.py opens them with the network blocked)."""
    from components.runtime.offline_html import CDN, local_references, remote_references

    pages = list(docs.rglob("*.html"))
    assert len(pages) == 7, pages  # the index, 3 suites, 3 validation results
    for page in pages:
        html = page.read_text()
        assert remote_references(html) == [], f"{page} loads from the internet"
        vendored = [r for r in local_references(html) if "static/vendor/" in r]
        assert len(vendored) == len(set(CDN.values())) and all((page.parent / r).is_file() for r in vendored), (page, vendored)


def test_broken_dataset_exits_3_with_the_report(workspace, capsys):
    prepare(load_params(), "classification")
    image = StagePaths("classification").data / "images" / "00003.png"
    image.write_bytes(image.read_bytes()[:40])
    prepare_again = StagePaths("classification")
    from components.data.manifest import write_manifest
    from components.tasks import get_task

    write_manifest(prepare_again.data, get_task("classification"), prepare_again.manifest)
    assert cli.main(["stage", "validate", "--task", "classification"]) == 3
    err = capsys.readouterr().err
    assert "- images decode: 1 rows; e.g. ['images/00003.png']" in err and "fix:" in err
    assert json.loads(prepare_again.validation.read_text())["failures"] == {"images decode": 1}
    (run,) = validate_runs("classification")
    assert run.data.tags["contract"] == "failed"


def test_user_dataset_is_ingested_and_a_link_out_of_it_refused(workspace, tmp_path):
    from components.data import shapes

    user = shapes.generate(tmp_path / "user", shapes.ShapesConfig(num_images=60, seed=2, minority_fraction=0.3))
    params = load_params()
    data = params.tasks["classification"].data.model_copy(update={"source": "path", "path": str(user)})
    task = params.tasks["classification"].model_copy(update={"data": data})
    params = params.model_copy(update={"tasks": {"classification": task}})
    prepare(params, "classification")
    assert validate(params, "classification")["images"] == 60
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    (user / "images" / "link.png").symlink_to(secret)
    stored = sorted(p.name for p in (workspace / "data" / "classification" / "images").iterdir())
    with pytest.raises(DataContractError, match="link.png: symbolic link .* leaves the dataset root"):
        prepare(params, "classification")
    assert sorted(p.name for p in (workspace / "data" / "classification" / "images").iterdir()) == stored


def test_dvc_repro_stops_at_a_failed_contract(tmp_path):
    """A user dataset with a corrupt image stops `dvc repro` at validate with exit code 3
    (never retried by the flow); nothing downstream runs and no model is produced."""
    from components.data import shapes

    source = shapes.generate(tmp_path / "user_data", shapes.ShapesConfig(num_images=60, image_size=24))
    (source / "images" / "00005.png").write_bytes(b"not a png")

    def user_dataset(params: dict) -> dict:
        params = tiny_params(params)
        params["tasks"]["classification"]["data"].update(source="path", path=str(source))
        return params

    ws = make_workspace(tmp_path / "ws", edit=user_dataset)
    result = dvc(ws, "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "exited with 3" in output
    assert "images decode: 1 rows; e.g. ['images/00005.png']" in output
    assert "Running stage 'train" not in output and not (ws / "models").exists()


def _strict_workspace(tmp_path: Path) -> Path:
    """A workspace whose contract no tiny dataset can meet (min_images above its size)."""
    def strict(params):
        params = tiny_params(params)
        params["tasks"]["classification"]["contract"]["min_images"] = 10_000
        return params

    return make_workspace(tmp_path / "ws", edit=strict)


@pytest.mark.slow  # a cold Prefect flow over two DVC stages
def test_prefect_flow_stops_at_a_failed_contract(tmp_path, prefect_api, monkeypatch):
    from flows.dvc_runner import StageFailed
    from flows.pipeline import cv_pipeline
    from tests.conftest import BIN

    ws = _strict_workspace(tmp_path)
    monkeypatch.setenv("CVOPS_ROOT", str(ws))
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = cv_pipeline(return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as info:
        state.result()
    assert info.value.returncode == 3 and "validate@classification" in str(info.value)
    assert not (ws / "models").exists()
