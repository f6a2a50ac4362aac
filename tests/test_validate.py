"""The validate stage end to end: a clean dataset of every registered task passes, with Data
Docs and an MLflow run; a broken one exits 3 with the report, and `dvc repro` stops there.
(The rules themselves, against a corpus of broken datasets: tests/test_contract.py.)"""

import json
import os
import shutil
from pathlib import Path

import mlflow
import pandas as pd
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


# ---- the contract in chunks (issue 18): what spans chunks is still caught, counted exactly
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """40 shapes with their manifests (classification)."""
    from components.data import shapes
    from components.data.manifest import write_manifest
    from components.tasks import get_task

    root = shapes.generate(tmp_path_factory.mktemp("small") / "shapes", shapes.ShapesConfig(num_images=40, image_size=16, seed=3))
    write_manifest(root, get_task("classification"), root / "manifest.csv", workers=2)
    return root


def _edit_csv(path: Path, change) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = change(table)
    table.to_csv(path, index=False)


def _contract(root: Path, rows: int, docs: Path | None = None) -> tuple[dict, str, list]:
    from components.config import ContractConfig
    from components.stages.validate import report, validate_dataset
    from components.tasks import get_task

    cfg = ContractConfig(min_group_images=0)  # 40 scenes need not hold both groups in every split
    rules, summary = validate_dataset(root, root / "manifest.csv", get_task("classification"), cfg, docs, rows=rows)
    return summary, report(rules, root / "manifest.csv"), rules


def test_a_contract_in_chunks_finds_what_one_chunk_finds(small, tmp_path):
    """Every pair a table-wide rule compares lies in different chunks of 14 rows: a path
    listed twice, the same bytes in two splits, a near-duplicate pair across splits; plus
    row-level failures in images and annotations. Rules, counts and examples are those of one
    chunk."""
    root = shutil.copytree(small, tmp_path / "ds")

    rows, pairs = 14, []

    def images(t):
        train, test, val = (t.index[t["split"] == s] for s in ("train", "test", "val"))
        t.loc[train[-1], "sha256"] = t.loc[test[0], "sha256"]  # the same bytes in train and test
        flipped = int(t.loc[train[0], "phash"], 16) ^ 1
        t.loc[val[-1], "phash"] = f"{flipped:016x}"  # one bit from a train picture
        t.loc[[1, 38], "width"] = "5000"
        pairs.extend([(2, len(t)), (train[-1], test[0]), (train[0], val[-1])])
        return pd.concat([t, t.iloc[[2]]])  # images/00002.png listed again, at the end

    _edit_csv(root / "manifest.csv", images)
    _edit_csv(root / "annotations.csv", lambda t: t.assign(label=t["label"].where(~t.index.isin([0, 39]), "hexagon")))
    assert all(a // rows != b // rows for a, b in pairs)
    whole, whole_text, _ = _contract(root, rows=1000)
    chunked, chunked_text, _ = _contract(root, rows=rows)
    assert set(whole["failures"]) == {"unique paths", "no duplicate images in a split", "no images shared between splits",
                                      "no near-duplicates across splits", "width in bounds", "labels in the class list"}, whole_text
    assert whole["failures"]["unique paths"] == 1 and whole["failures"]["no images shared between splits"] == 2
    assert chunked == whole and chunked_text == whole_text
    assert "- unique paths: 1 rows; e.g. ['images/00002.png']" in whole_text


def test_counts_stay_exact_beyond_the_examples_kept(small, tmp_path):
    """Every image fails one rule: the counts are exact though only EXAMPLES rows are kept
    (and GX's stored results are cut); Data Docs hold one result per chunk, offline."""
    from components.runtime.offline_html import remote_references
    from components.stages.validate import EXAMPLES

    root = shutil.copytree(small, tmp_path / "ds")
    _edit_csv(root / "manifest.csv", lambda t: t.assign(width="5000"))
    summary, text, rules = _contract(root, rows=25, docs=tmp_path / "docs")  # 25 failures in the first chunk
    assert summary["failures"] == {"width in bounds": 40}
    assert "- width in bounds: 40 rows; e.g. ['images/00000.png', 'images/00001.png', 'images/00002.png']" in text
    (rule,) = [r for r in rules if r.failures]
    assert len(rule.failures) == EXAMPLES < 40
    for table in ("images", "annotations"):
        results = list((tmp_path / "docs" / "validations" / f"classification_{table}").rglob("*.html"))
        assert sorted(p.parts[-3] for p in results) == ["lines-2-26", "lines-27-41"]  # run names: the CSV lines
    assert all(remote_references(p.read_text()) == [] for p in (tmp_path / "docs").rglob("*.html"))
