"""The registered model: an MLflow pyfunc that takes images and returns the task's
predictions (labels and probabilities, boxes with labels and scores, or class masks).

Input: a DataFrame with an `image` column of encoded image bytes or base64 strings (what
`mlflow models serve` receives as JSON), or a list of images / an [N, H, W, C] uint8 array.
"""

from __future__ import annotations

import base64
from typing import Any

import mlflow
import numpy as np
import pandas as pd


def _images(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise ValueError("input DataFrame needs an 'image' column of encoded image bytes or base64 strings")
        model_input = model_input["image"].tolist()
    if isinstance(model_input, np.ndarray) and model_input.ndim in (3, 4) and model_input.dtype == np.uint8:
        return list(model_input) if model_input.ndim == 4 else [model_input]
    return [base64.b64decode(x) if isinstance(x, str) else x for x in model_input]


class CVOpsModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from components.serving.checkpoint import load_checkpoint

        self.model, self.meta = load_checkpoint(context.artifacts["checkpoint"])

    # pd.DataFrame is the one hint MLflow infers no schema from (inputs are images, not columns),
    # and a hint at all stops its "Add type hints to the predict method" warning at every load
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from components.serving.checkpoint import predict_images

        return predict_images(self.model, self.meta, _images(model_input))


mlflow.models.set_model(CVOpsModel())  # models-from-code: MLflow imports this file to load the model
