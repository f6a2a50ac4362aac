"""The real pipeline on tiny data in a temporary git + DVC workspace: `dvc repro` with Ray
Train, a SQLite MLflow store and registry, then the Prefect flow over the same stages.
Tests run in file order on one workspace; the ones that change params come last."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient

from components.tasks import TASKS
from tests.conftest import BIN, dvc, stage_env

pytestmark = pytest.mark.timeout(3600)  # builds the whole pipeline for every task on first use

TASK = "classification"
MODEL = f"cvops-{TASK}"


def client_for(ws: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns.db'}")


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def set_param(ws: Path, dotted: str, value) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    *parents, leaf = dotted.split(".")
    section = params
    for key in parents:
        section = section[int(key)] if isinstance(section, list) else section[key]
    section[leaf] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_tracks_runs_and_promotes_a_champion(built_workspace):
    ws, client = built_workspace, client_for(built_workspace)
    experiment = client.get_experiment_by_name(f"cvops/{TASK}")  # an experiment per task
    runs = client.search_runs([experiment.experiment_id])
    train_run = next(r for r in runs if r.data.tags.get("cvops.stage") == "train")
    assert train_run.info.run_name.startswith(f"{TASK}-train @"), "named after the task, the stage and the commit"
    assert {"test/accuracy", "test/macro_f1", "best/val/accuracy"} <= set(train_run.data.metrics), "MLflow's UI sections by '/'"
    assert "best/epoch" not in train_run.data.metrics and "cvops.best_epoch" in train_run.data.tags
    assert train_run.data.params["model.arch"] == "small_cnn"
    history = client.get_metric_history(train_run.info.run_id, "val/accuracy")
    assert [m.step for m in history] == [0, 1], "one val metric per epoch, logged once (rank 0)"

    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == train_run.info.run_id
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    data_md5 = next(o["md5"] for o in lock["stages"][f"prepare@{TASK}"]["outs"] if o["path"] == f"data/{TASK}")
    assert champion.tags["cvops.data_hash"] == data_md5
    (dataset,) = [d.dataset for d in train_run.inputs.dataset_inputs]  # the run's Datasets: the manifest
    assert dataset.name == f"{TASK}-data" and dataset.digest == data_md5[:32] and json.loads(dataset.source)["uri"].endswith("manifest.csv")
    assert champion.tags["cvops.git_commit"] and champion.tags["cvops.gate.passed"] == "true"
    verdict = json.loads((ws / "reports" / TASK / "gate.json").read_text())
    assert verdict["passed"] and verdict["version"] == str(champion.version)  # the SQLite store answers ints
    metrics = json.loads((ws / "reports" / TASK / "metrics.json").read_text())
    assert train_run.data.metrics["test/accuracy"] == pytest.approx(metrics["accuracy"])
    assert (ws / "reports" / TASK / "evaluation" / "confusion_matrix.png").stat().st_size > 0


def test_dvc_metrics_are_numbers_and_cvops_compare_fits_100_columns(built_workspace):
    def leaves(value):
        if isinstance(value, dict):
            for child in value.values():
                yield from leaves(child)
        else:
            yield value

    files = json.loads(dvc(built_workspace, "metrics", "show", "--json").stdout)[""]["data"]
    assert {f"reports/{TASK}/validation_metrics.json", f"reports/{TASK}/gate_metrics.json"} <= set(files)
    wrong = {path: [v for v in leaves(entry["data"]) if isinstance(v, bool) or not isinstance(v, int | float)]
             for path, entry in files.items()}
    assert {path: v for path, v in wrong.items() if v} == {}, "strings and lists belong in the reports, not the metrics"
    assert files[f"reports/{TASK}/gate_metrics.json"]["data"]["passed"] == 1

    result = subprocess.run([str(BIN / "cvops"), "compare"], cwd=built_workspace, capture_output=True, text=True,
                            env={**stage_env(), "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 100, result.stdout
    accuracy = json.loads((built_workspace / "reports" / TASK / "metrics.json").read_text())["accuracy"]
    workspace = next(line for line in lines if line.startswith("workspace"))  # the first task's table
    assert f"{accuracy:.4f}" in workspace and workspace.endswith("passed")
    assert all(f"{task}: " in result.stdout for task in TASKS)


def test_champion_loads_as_pyfunc_and_predicts_labels(built_workspace):
    mlflow.set_tracking_uri(f"sqlite:///{built_workspace / 'mlruns.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    image = next((built_workspace / "data" / TASK / "images").glob("*.png")).read_bytes()
    import pandas as pd

    predictions = model.predict(pd.DataFrame({"image": [image, image]}))
    assert len(predictions) == 2
    assert predictions[0]["label"] in {"circle", "square", "triangle"}
    assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_is_evaluated_drawn_and_registered(built_workspace, task):
    ws, client = built_workspace, client_for(built_workspace)
    metrics = json.loads((ws / "reports" / task / "metrics.json").read_text())
    assert TASKS[task].monitor in metrics
    champion = client.get_model_version_by_alias(f"cvops-{task}", "champion")
    artifacts = [a.path for a in client.list_artifacts(champion.run_id, "evaluation")]
    assert (ws / "reports" / task / "evaluation" / "predictions.png").stat().st_size > 0  # every task draws
    assert "evaluation/predictions.png" in artifacts


@pytest.mark.parametrize("task", sorted(TASKS))
def test_init_from_a_registered_champion_resolves_to_its_checkpoint(built_workspace, task, monkeypatch):
    from components.config import load_params
    from components.runtime.ray_cluster import resolve_init
    from components.serving.checkpoint import load_checkpoint

    monkeypatch.chdir(built_workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = resolve_init(f"models:/cvops-{task}@champion", load_params())
    model, meta = load_checkpoint(path)
    assert meta["task"] == task
    local = torch.load(built_workspace / "models" / task / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in local.items())


def test_reports_open_offline_in_chromium(built_workspace, tmp_path):
    """Air-gapped: `dvc plots show` writes one self-contained page (Vega inlined by the
    .dvc/config template) whose curves draw, and the GX Data Docs show their tables, in
    Chromium with every http(s) request refused."""
    from components.runtime.offline_html import DVC_TEMPLATE, dvc_plots_template, remote_references

    assert DVC_TEMPLATE.read_text() == dvc_plots_template(), "web_assets changed: `python -m components.runtime.offline_html`"
    dvc(built_workspace, "plots", "show", "-o", str(tmp_path / "plots"))
    plots = tmp_path / "plots" / "index.html"
    assert remote_references(plots.read_text()) == []
    specs = [json.loads(m) for m in re.findall(r"var spec = (\{.*?\});\n\s*vegaEmbed", plots.read_text(), re.S)]
    axes = {(axis["field"], axis.get("title")) for spec in specs for axis in _encodings(spec, ("x", "y"))}
    assert len(specs) == 4 * len(TASKS) and all(title and title != field for field, title in axes), axes
    browser = "/usr/bin/chromium"
    if not Path(browser).exists():
        pytest.skip(f"{browser} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the dev group's playwright is missing")
    docs = built_workspace / "reports" / TASK / "data_docs"
    [result] = (docs / "validations" / f"{TASK}_images").rglob("*.html")
    with playwright.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-gpu"], headless=True)
        context = chromium.new_context()
        refused: list[str] = []
        context.route("http*://**/*", lambda route: (refused.append(route.request.url), route.abort()))
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(plots.as_uri())
            curves = page.locator("div[id$='_json']")  # a Vega plot per curves/*.json
            assert curves.count() == 4 * len(TASKS), curves.count()
            page.wait_for_function("() => Array.from(document.querySelectorAll(\"div[id$='_json']\")).every(d => d.querySelector('canvas, svg'))")
            page.goto((docs / "index.html").as_uri())  # the validation results: a bootstrap-table
            page.get_by_role("link", name=f"{TASK}_images").first.wait_for(state="visible", timeout=10_000)
            page.goto(result.as_uri())  # one result: an expectation per row, with its status icon
            page.get_by_text("Overview", exact=True).first.wait_for(state="visible", timeout=10_000)
            fonts = page.evaluate("document.fonts.ready.then(fs => Array.from(fs).map(f => [f.family, f.weight, f.status]))")
            assert ["Font Awesome 6 Free", "900", "loaded"] in fonts, f"the status icons' font: {fonts}"
        finally:
            chromium.close()
    assert refused == [] and errors == [], (refused, errors)


def _encodings(spec, channels: tuple[str, ...]):
    """Every encoding of those channels in a Vega-Lite spec, layers included."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key in channels and isinstance(value, dict) and "field" in value:
                yield value
            else:
                yield from _encodings(value, channels)
    elif isinstance(spec, list):
        for item in spec:
            yield from _encodings(item, channels)


def test_second_repro_runs_no_stage(built_workspace):
    result = dvc(built_workspace, "repro")
    assert ran_stages(result.stdout) == []
    tasks = yaml.safe_load((built_workspace / "params.yaml").read_text())["pipeline"]["tasks"]
    stages = yaml.safe_load((built_workspace / "dvc.yaml").read_text())["stages"]
    assert result.stdout.count("didn't change, skipping") == len(stages) * len(tasks)


def test_flow_without_changes_skips_every_stage_and_publishes_a_report(built_workspace, prefect_api, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import cv_pipeline

    monkeypatch.setenv("CVOPS_ROOT", str(built_workspace))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    before = client_for(built_workspace).search_model_versions(f"name='{MODEL}'")
    state = cv_pipeline(return_state=True)
    assert state.is_completed(), state.message
    task_runs = state.result()["tasks"]
    assert task_runs[TASK]["verdict"]["passed"]
    after = client_for(built_workspace).search_model_versions(f"name='{MODEL}'")
    assert len(after) == len(before), "nothing re-registered when nothing changed"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"cvops-{TASK}"])))
    assert artifacts and "## Gate" in artifacts[0].data and "accuracy" in artifacts[0].data


def test_changing_the_gate_reruns_only_promote(built_workspace):
    ws = built_workspace
    set_param(ws, f"tasks.{TASK}.gate.thresholds", [{"metric": "accuracy", "min": 1.01}])
    champion_before = client_for(ws).get_model_version_by_alias(MODEL, "champion").version
    result = dvc(ws, "repro")
    assert ran_stages(result.stdout) == [f"promote@{TASK}"]
    verdict = json.loads((ws / "reports" / TASK / "gate.json").read_text())
    assert not verdict["passed"] and "accuracy" in verdict["reason"]
    client = client_for(ws)
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion_before
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == verdict["version"]


def test_changing_an_evaluation_param_reruns_evaluate_and_promote_only(built_workspace):
    ws = built_workspace
    model = (ws / "models" / TASK / "model.pt").read_bytes()
    set_param(ws, f"tasks.{TASK}.evaluate.bootstrap_samples", 50)
    result = dvc(ws, "repro")
    # export follows evaluate (it logs to the same run, after it), so it reruns too; train does not
    assert ran_stages(result.stdout) == [f"evaluate@{TASK}", f"export@{TASK}", f"promote@{TASK}"]
    assert (ws / "models" / TASK / "model.pt").read_bytes() == model, "the model was not retrained"


def test_changing_a_training_param_reruns_train_and_downstream_only(built_workspace):
    set_param(built_workspace, f"tasks.{TASK}.train.epochs", 1)
    result = dvc(built_workspace, "repro")
    # tune reruns too (it searches around the training config); with tuning off it only
    # rewrites its empty overrides
    assert ran_stages(result.stdout) == [f"tune@{TASK}", f"train@{TASK}", f"evaluate@{TASK}", f"export@{TASK}", f"promote@{TASK}"]
