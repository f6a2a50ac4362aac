"""MLflow on embedded defaults: SQLite + local artifacts, unless MLFLOW_TRACKING_URI says
otherwise (an MLflow server for a team). Relative paths in params resolve from the repo root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow

from components.config import Params


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
