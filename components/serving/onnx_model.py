"""Log an exported ONNX model as an MLflow pyfunc (serving/onnx_pyfunc.py), servable with
`mlflow models serve` through ONNX Runtime.

Idempotent per training run: the export stage reruns on the same run whenever its params or
code change, and each `log_model` creates a new LoggedModel. So each logged model carries the
sha256 of what it serves (ONNX file + meta.json): the same content is not logged again, and a
run's older `onnx-<format>` models with other content (or of a format no longer exported) are
deleted, so the run holds one model per format, the current one.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow

PYFUNC_FILE = Path(__file__).parent / "onnx_pyfunc.py"
SERVING_PACKAGES = ("onnxruntime", "torch", "torchvision", "mlflow", "pillow", "numpy", "pandas")  # torch: pre/post-processing
CONTENT_TAG = "cvops.content_sha256"


def content_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_onnx_models(run_id: str) -> list:
    """The live `onnx-*` LoggedModels whose source is run `run_id`."""
    client = mlflow.MlflowClient()
    experiment = client.get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models(experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}'",
                                        output_format="list")
    return [m for m in found if m.name.startswith("onnx-")]


def log_onnx_model(name: str, onnx_path: Path, meta_path: Path, run_id: str) -> str:
    """Log `name` (onnx-<format>) on the active run `run_id` unless that run already holds it
    with the same content; older versions of it are deleted. Returns its model id."""
    digest = content_hash(onnx_path, meta_path)
    client = mlflow.MlflowClient()
    kept = None
    for model in (m for m in run_onnx_models(run_id) if m.name == name):
        if kept is None and model.tags.get(CONTENT_TAG) == digest:
            kept = model.model_id
        else:
            client.delete_logged_model(model.model_id)
    if kept is not None:
        return kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
        info = mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_FILE),
                                       artifacts={"onnx": str(onnx_path), "meta": str(meta_path)},
                                       pip_requirements=[f"{p}=={version(p)}" for p in SERVING_PACKAGES],
                                       tags={CONTENT_TAG: digest})
    return info.model_id


def drop_stale_formats(run_id: str, formats: set[str]) -> list[str]:
    """Remove from run `run_id` the ONNX models of formats not in `formats` (one switched off
    since the last export, e.g. tasks.<task>.export.int8: false): their `onnx-<format>`
    LoggedModels and the export/model.<format>.onnx artifact, so that nothing on the run
    offers an artifact the current export.json does not vouch for. Returns what was removed."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = mlflow.MlflowClient()
    removed = []
    for model in run_onnx_models(run_id):
        if model.name.removeprefix("onnx-") not in formats:
            client.delete_logged_model(model.model_id)
            removed.append(model.name)
    repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
    for artifact in client.list_artifacts(run_id, "export"):
        fmt = Path(artifact.path).name.removeprefix("model.").removesuffix(".onnx")
        if artifact.path.endswith(".onnx") and fmt not in formats:
            try:
                repo.delete_artifacts(artifact.path)
                removed.append(artifact.path)
            except NotImplementedError:  # a store without deletes: the gate's servable tag still withholds it
                print(f"note: {artifact.path} stays on run {run_id} (the artifact store cannot delete)")
    return sorted(removed)
