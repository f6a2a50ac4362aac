"""MLflow on embedded defaults: SQLite + local artifacts, unless MLFLOW_TRACKING_URI says
otherwise (an MLflow server for a team). Relative paths in params resolve from the repo root."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import mlflow

from components.config import ConfigError, Params


def tracking_uri(params: Params) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def experiment_name(params: Params, task: str | None = None) -> str:
    """One MLflow experiment per task ('cvops/classification'), so a task's runs compare
    like with like in the UI; the bare name when no task is concerned."""
    return f"{params.tracking.experiment}/{task}" if task else params.tracking.experiment


def setup(params: Params, task: str | None = None) -> str:
    """Point MLflow at the tracking store and create the task's experiment (before any
    fan-out: SQLite rejects concurrent writers). Returns the experiment id."""
    mlflow.set_tracking_uri(tracking_uri(params))
    name = experiment_name(params, task)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return experiment.experiment_id
    # A tracking server decides where artifacts go (its --default-artifact-root or S3 proxy)
    uri = tracking_uri(params)
    location = None if uri.startswith(("http://", "https://")) else Path(params.tracking.artifact_root).resolve().as_uri()
    try:
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent pipeline
        experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def model_name(params: Params, task: str) -> str:
    return f"{params.tracking.model_prefix}{task}"


# Metric groups: MLflow's UI sections a run's charts by the part before the first '/'
SECTIONS = ("train", "val", "test", "best", "perf", "fairness", "robustness", "adversarial", "export")


def metric_key(name: str, group: str = "") -> str:
    """The MLflow name of one of our metrics. Its '/' groups are kept (MLflow takes
    letters, digits, '_', '-', '.', ' ', ':' and '/'; mlflow/utils/validation.py) and a name
    outside SECTIONS goes under `group`: accuracy -> test/accuracy, recall/circle ->
    test/recall/circle, fairness/gap stays. '@' (an attack's eps) becomes ' eps ', so
    adversarial/fgsm_accuracy@0.005 -> adversarial/fgsm_accuracy eps 0.005; other rejected
    characters become '_'."""
    name = re.sub(r"[^\w.\- :/]", "_", name.replace("@", " eps "))
    if group and name.split("/", 1)[0] not in SECTIONS:
        name = f"{group}/{name}"
    return re.sub(r"/+", "/", name).strip("/")  # MLflow rejects names that are not normalised paths


def run_name(task: str, stage: str) -> str:
    """What a run is: 'classification-train exp-5a1b2' inside a DVC experiment (dvc exp run
    sets DVC_EXP_NAME), else 'classification-train @4b8d53d' (the commit), else the stage."""
    import subprocess

    label = os.environ.get("DVC_EXP_NAME", "")
    if not label:
        try:
            label = "@" + subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            label = ""
    return f"{task}-{stage} {label}".strip()


def log_dataset(manifest: Path, digest: str, name: str, context: str = "training") -> None:
    """The dataset in the active run's Datasets (mlflow.log_input): the manifest (one row
    per image) with the DVC content hash of the prepared data as its digest, so two runs on
    the same data show the same dataset version. Without a hash (no dvc.lock yet), MLflow's
    own digest of the manifest."""
    import warnings

    import pandas as pd

    frame = pd.read_csv(manifest)
    with warnings.catch_warnings():  # "source can be interpreted in multiple ways", "integer columns": both harmless here
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=str(manifest), name=name, digest=(digest or None) and digest[:32])
        mlflow.log_input(dataset, context=context)


def training_run(params: Params, run_info: Path) -> str:
    """The training's MLflow run id from the train stage's run info, once the tracking store
    has that run. Outputs pulled from another workspace (dvc pull) name a run of *its* store:
    evaluate and promote log to and register from that run, so they say how to get it."""
    import json

    run_id = json.loads(Path(run_info).read_text())["run_id"]
    try:
        mlflow.MlflowClient(tracking_uri(params)).get_run(run_id)
    except mlflow.exceptions.MlflowException:
        task = Path(run_info).parent.name
        raise ConfigError(
            f"{run_info} names MLflow run {run_id}, which {tracking_uri(params)} does not have (outputs pulled "
            "from another workspace?): set MLFLOW_TRACKING_URI to the store that has it, or retrain here "
            f"(dvc repro --force train@{task})"
        ) from None
    return run_id


def read_artifact_text(client: mlflow.MlflowClient, run_id: str, path: str) -> str:
    """A run's text artifact, downloaded into a temporary folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="cvops-artifact-") as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_text()
