"""`cvops predict`: the champion (or another alias) on image files -> predictions JSON and overlays.

Goes through the registered pyfunc, so it predicts exactly what `mlflow models serve` would;
with runtime "onnx" / "onnx-int8", through the version's exported ONNX model on ONNX Runtime
(the export stage attached it to the version's run under export/), same records.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from PIL import Image

from components.tasks import get_task

RUNTIMES = {"torch": None, "onnx": "fp32", "onnx-int8": "int8"}  # --runtime -> exported format


def load_predictor(name: str, alias: str, runtime: str = "torch"):
    """predict(DataFrame of images) -> records, for models:/<name>@<alias> on `runtime`."""
    if RUNTIMES[runtime] is None:
        return mlflow.pyfunc.load_model(f"models:/{name}@{alias}").predict
    import tempfile

    from components.errors import ConfigError
    from components.serving.checkpoint import predict_images
    from components.serving.onnx_runtime import load_exported
    from components.serving.pyfunc import _images

    try:
        run_id = mlflow.MlflowClient().get_model_version_by_alias(name, alias).run_id
        export_dir = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="export", dst_path=tempfile.mkdtemp())
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"{name}@{alias} has no exported ONNX model ({exc.message.splitlines()[0]}): "
                          "run the export stage (dvc repro export@<task>) and promote again, or use --runtime torch") from None
    try:
        model, meta = load_exported(export_dir, RUNTIMES[runtime])
    except FileNotFoundError as exc:  # e.g. INT8 was switched off (tasks.<task>.export.int8)
        raise ConfigError(f"{name}@{alias}: {exc}; use --runtime onnx (FP32) or torch") from None
    return lambda frame: predict_images(model, meta, _images(frame))


def predict_files(task: str, name: str, images: list[Path], out_dir: Path, alias: str = "champion",
                  runtime: str = "torch") -> list[dict]:
    """Writes out_dir/predictions.json (one record per image, with its path) and
    out_dir/<stem>.overlay.png per image; returns the records."""
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
    predict = load_predictor(name, alias, runtime)
    records = predict(pd.DataFrame({"image": [Path(p).read_bytes() for p in images]}))
    spec = get_task(task)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, record in zip(images, records, strict=True):
        with Image.open(path) as image:
            spec.overlay(image.convert("RGB"), record).save(out_dir / f"{Path(path).stem}.overlay.png")
    result = [{"image": str(p), **r} for p, r in zip(images, records, strict=True)]
    (out_dir / "predictions.json").write_text(json.dumps(result, indent=2))
    return result
