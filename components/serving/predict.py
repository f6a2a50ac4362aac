"""`cvops predict`: the champion (or another alias) on image files, folders or globs ->
predictions.json, one overlay per image (the evaluation's drawing, TaskSpec.draw) and, for
masks, an index PNG and a colour PNG per image.

Goes through the registered pyfunc, so it predicts exactly what `mlflow models serve` would;
detections are then selected as the evaluation's figure selects them (`select`). With runtime
"onnx" / "onnx-int8", through the version's exported ONNX model on ONNX Runtime (the export
stage attached it to the version's run under export/): the same records.
"""

from __future__ import annotations

import glob
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.serving.selection import operating_point, select

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
RUNTIMES = {"torch": None, "onnx": "fp32", "onnx-int8": "int8"}  # --runtime -> exported format


@dataclass
class Inputs:
    images: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> why it is not predicted


def expand(arguments: list[str]) -> Inputs:
    """Image files from file paths, folders (their image files, sorted) and glob patterns;
    a path that does not exist or matches nothing is recorded as failed."""
    found = Inputs()
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found.images += files
            if not files:
                found.failed[arg] = "folder holds no image files (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")"
        elif path.is_file():
            found.images.append(path)
        elif glob.has_magic(arg):
            files = sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            found.images += files
            if not files:
                found.failed[arg] = "pattern matches no file"
        else:
            found.failed[arg] = "no such file or folder"
    found.images = list(dict.fromkeys(found.images))
    return found


def readable(images: list[Path], failed: dict[str, str]) -> list[tuple[Path, bytes]]:
    """(path, bytes) of the images PIL decodes; the others recorded in `failed` with PIL's reason."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for path in images:
        try:
            with Image.open(path) as image:
                image.load()
            out.append((path, path.read_bytes()))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            failed[str(path)] = f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return out


def summary(record: dict[str, Any]) -> str:
    """One line about one image's prediction, for the console."""
    if "detections" in record:
        dets = record["detections"]
        counts: dict[str, int] = {}
        for d in dets:
            counts[d["label"]] = counts.get(d["label"], 0) + 1
        best = f", best {dets[0]['label']} {dets[0]['score']:.2f}" if dets else ""
        return f"{len(dets)} object(s): " + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none") + best
    if "pixels" in record:
        total = sum(record["pixels"].values()) or 1
        return "pixels: " + ", ".join(f"{k} {n / total:.1%}" for k, n in sorted(record["pixels"].items(), key=lambda kv: -kv[1]))
    return f"{record['label']} {record['score']:.2f}"


def write_mask(record: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Any]:
    """The record's mask (class ids) as <stem>.mask.png (index: pixel value = class id) and
    <stem>.mask.colour.png (the figures' class colours); the record then names the files."""
    import numpy as np
    from PIL import Image

    from components.tasks.drawing import colour_mask

    mask = np.asarray(record["mask"], dtype=np.uint8)
    index, colour = out_dir / f"{stem}.mask.png", out_dir / f"{stem}.mask.colour.png"
    Image.fromarray(mask, mode="L").save(index)
    Image.fromarray(colour_mask(mask)).save(colour)
    return {**record, "mask": {"index": str(index), "colour": str(colour)}}


def load_predictor(name: str, alias: str, runtime: str = "torch"):
    """(predict(DataFrame of images) -> records, the model's classes) for models:/<name>@<alias>
    on `runtime`: the registered pyfunc, or the version's exported ONNX model."""
    import mlflow

    if RUNTIMES[runtime] is None:
        with warnings.catch_warnings():  # "add type hints to predict": the input is images, not a schema
            warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
            model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
        return model.predict, model.unwrap_python_model().meta["classes"]
    import tempfile

    from components.errors import ConfigError
    from components.serving.checkpoint import predict_images
    from components.serving.onnx_runtime import load_exported
    from components.serving.pyfunc import _images

    # the session holds the model in memory once created: the download is removed afterwards
    with tempfile.TemporaryDirectory(prefix="cvops-export-") as scratch:
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
            run_id, servable = version.run_id, version.tags.get("cvops.servable")
            if servable is not None and f"onnx-{RUNTIMES[runtime]}" not in servable.split(","):  # the gate's names
                raise ConfigError(f"{name}@{alias} (version {version.version}): {runtime} is not servable, its export "
                                  f"failed the gate's artifact rules (servable: {servable}; `cvops history` shows why); "
                                  "use --runtime torch or one of those")
            export_dir = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="export", dst_path=scratch)
        except mlflow.exceptions.MlflowException as exc:
            raise ConfigError(f"{name}@{alias} has no exported ONNX model ({exc.message.splitlines()[0]}): "
                              "run the export stage (dvc repro export@<task>) and promote again, or use --runtime torch") from None
        try:
            model, meta = load_exported(export_dir, RUNTIMES[runtime])
        except FileNotFoundError as exc:  # e.g. INT8 was switched off (tasks.<task>.export.int8)
            raise ConfigError(f"{name}@{alias}: {exc}; use --runtime onnx (FP32) or torch") from None
    return (lambda frame: predict_images(model, meta, _images(frame))), meta["classes"]


def predict_files(task: str, name: str, arguments: list[str], out_dir: Path, alias: str = "champion",
                  conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                  runtime: str = "torch") -> tuple[list[dict], dict[str, str]]:
    """Predicts every readable image of `arguments` (files, folders, globs): writes
    out_dir/predictions.json (one record per image, with its path), <stem>.overlay.png and,
    for masks, <stem>.mask.png / .mask.colour.png. Returns (records, failed path -> reason)."""
    import pandas as pd
    from PIL import Image

    from components.tasks import get_task
    from components.tasks.drawing import legend, stack

    inputs = expand(arguments)
    images = readable(inputs.images, inputs.failed)
    if not images:
        return [], inputs.failed
    predict, classes = load_predictor(name, alias, runtime)
    raw = predict(pd.DataFrame({"image": [data for _, data in images]}))
    point = {**operating_point(task), **{k: v for k, v in {"conf": conf, "iou": iou, "max_det": max_det}.items() if v is not None}}
    spec = get_task(task)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = _unique_stems([p for p, _ in images])
    records = []
    for (path, _), stem, record in zip(images, stems, raw, strict=True):
        record = select(record, **point)
        with Image.open(path) as image:
            drawn = spec.draw(image.convert("RGB"), record, classes)
        stack([drawn], legend(spec.draw_legend(classes), drawn.shape[-1])).save(out_dir / f"{stem}.overlay.png")
        if "mask" in record:
            record = write_mask(record, out_dir, stem)
        records.append({"image": str(path), "overlay": str(out_dir / f"{stem}.overlay.png"), **record})
    (out_dir / "predictions.json").write_text(json.dumps(records, indent=2))
    return records, inputs.failed


def _unique_stems(paths: list[Path]) -> list[str]:
    """Output names per image: the file stem, with the parent folder's name where two images
    share a stem (a/x.png and b/x.png)."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
