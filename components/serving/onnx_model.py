"""Log an exported ONNX model as an MLflow pyfunc (serving/onnx_pyfunc.py), servable with
`mlflow models serve` through ONNX Runtime."""

from __future__ import annotations

import logging
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow

PYFUNC_FILE = Path(__file__).parent / "onnx_pyfunc.py"
SERVING_PACKAGES = ("onnxruntime", "torch", "torchvision", "mlflow", "pillow", "numpy", "pandas")  # torch: pre/post-processing


def log_onnx_model(name: str, onnx_path: Path, meta_path: Path) -> mlflow.models.model.ModelInfo:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
        return mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_FILE),
                                       artifacts={"onnx": str(onnx_path), "meta": str(meta_path)},
                                       pip_requirements=[f"{p}=={version(p)}" for p in SERVING_PACKAGES])
