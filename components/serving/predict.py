"""`cvops predict`: the champion (or another alias) on image files -> predictions JSON and overlays.

Goes through the registered pyfunc, so it predicts exactly what `mlflow models serve` would.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from PIL import Image

from components.tasks import get_task


def predict_files(task: str, name: str, images: list[Path], out_dir: Path, alias: str = "champion") -> list[dict]:
    """Writes out_dir/predictions.json (one record per image, with its path) and
    out_dir/<stem>.overlay.png per image; returns the records."""
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
    model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    records = model.predict(pd.DataFrame({"image": [Path(p).read_bytes() for p in images]}))
    spec = get_task(task)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, record in zip(images, records, strict=True):
        with Image.open(path) as image:
            spec.overlay(image.convert("RGB"), record).save(out_dir / f"{Path(path).stem}.overlay.png")
    result = [{"image": str(p), **r} for p, r in zip(images, records, strict=True)]
    (out_dir / "predictions.json").write_text(json.dumps(result, indent=2))
    return result
