"""The checkpoint as an MLflow model: a models-from-code pyfunc (serving/pyfunc.py)."""

from __future__ import annotations

import logging
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow

PYFUNC_FILE = Path(__file__).parent / "pyfunc.py"
SERVING_PACKAGES = ("torch", "torchvision", "mlflow", "pillow", "numpy", "pandas")


def log_model(checkpoint: Path) -> mlflow.models.model.ModelInfo:
    """Log the checkpoint as an MLflow pyfunc (servable with `mlflow models serve`)."""
    with warnings.catch_warnings():  # "add type hints to predict": inputs are images, not a schema
        warnings.simplefilter("ignore", UserWarning)
        logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)  # no pip in a uv venv
        return mlflow.pyfunc.log_model(  # models-from-code: nothing pickled, loaded by import
            name="model", python_model=str(PYFUNC_FILE), artifacts={"checkpoint": str(checkpoint)},
            pip_requirements=[f"{p}=={version(p)}" for p in SERVING_PACKAGES],
        )
