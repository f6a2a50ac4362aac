"""An exported ONNX model as an MLflow pyfunc served by ONNX Runtime, with the torch
pyfunc's input and output schema (serving/pyfunc.py): labels with probabilities, boxes with
labels and scores, or class masks, per image. Models-from-code: loaded by import."""

from __future__ import annotations

import mlflow


class CVOpsOnnxModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import json

        from components.serving.onnx_runtime import onnx_model

        with open(context.artifacts["meta"]) as f:
            self.meta = json.load(f)
        self.model = onnx_model(context.artifacts["onnx"], self.meta)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow reads them as a schema
        from components.serving.checkpoint import predict_images
        from components.serving.pyfunc import _images

        return predict_images(self.model, self.meta, _images(model_input))


mlflow.models.set_model(CVOpsOnnxModel())
