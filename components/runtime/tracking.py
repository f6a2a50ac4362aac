"""MLflow on embedded defaults: SQLite + local artifacts, unless MLFLOW_TRACKING_URI says
otherwise (an MLflow server for a team). Relative paths in params resolve from the repo root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow

from components.config import ConfigError, Params


def tracking_uri(params: Params) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def setup(params: Params) -> str:
    """Point MLflow at the tracking store and create the experiment (before any fan-out:
    SQLite rejects concurrent writers). Returns the experiment id."""
    mlflow.set_tracking_uri(tracking_uri(params))
    name = params.tracking.experiment
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


def metric_key(name: str, prefix: str = "") -> str:
    """An MLflow metric name for one of ours: characters MLflow rejects ('/', '@', ...)
    become '_', e.g. val/accuracy -> val_accuracy, adversarial/pgd_accuracy@0.01 ->
    adversarial_pgd_accuracy_0.01."""
    return prefix + re.sub(r"[^\w.\- :]", "_", name)


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
