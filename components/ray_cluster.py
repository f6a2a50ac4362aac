"""Connecting to Ray: a cluster when RAY_ADDRESS (or params ray.address) is set, else a
local one started for the duration of the stage."""

from __future__ import annotations

import os
from pathlib import Path

from components.config import Params


def connect(params: Params) -> tuple[bool, bool]:
    """Initialise Ray; returns (use_gpu, started_here)."""
    import ray

    started_here = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or params.ray.address
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
            started_here = True
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = bool(gpus) if params.ray.use_gpu == "auto" else bool(params.ray.use_gpu)
    return use_gpu, started_here


def shutdown() -> None:
    import ray

    ray.shutdown()


def resolve_init(init_from: str | None, params: Params) -> str | None:
    """A local path to the checkpoint to start from: a file, or `models:/<name>@<alias>`
    (or `models:/<name>/<version>`) from the MLflow registry."""
    if not init_from:
        return None
    if not init_from.startswith("models:/"):
        path = Path(init_from)
        if not path.is_file():
            raise FileNotFoundError(f"model.init_from: checkpoint '{path}' does not exist; give a .pt written by the train stage or a models:/ URI")
        return str(path.resolve())
    from components import tracking

    tracking.setup(params)
    return str(registered_checkpoint(init_from))


def registered_checkpoint(model_uri: str) -> Path:
    """The checkpoint inside a registered cvops pyfunc: download the model directory and
    follow its MLmodel (python_function.artifacts.checkpoint.path), the layout MLflow wrote."""
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    if "checkpoint" not in artifacts:
        raise ValueError(f"{model_uri}: its MLmodel has no python_function artifact 'checkpoint'; init_from needs a model logged by the cvops train stage")
    return (local / artifacts["checkpoint"]["path"]).resolve()
