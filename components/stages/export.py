"""The export stage: the trained model as ONNX FP32 and INT8, verified and measured.

- FP32: torch.onnx.export (dynamo exporter, dynamic batch; serving/onnx_export.py says what
  goes into the graph per model kind);
- INT8: ONNX Runtime static post-training quantization, QDQ, calibrated on a seeded sample
  of the train split (serving/quantize.py);
- parity: each artifact runs the task's own predict and metric code on the test split
  through ONNX Runtime (serving/onnx_runtime.py) -> `export/<format>/<metric>` and
  `export/<format>/drop` (eager minus exported, in the metric's unit: 0.004 is 0.4
  accuracy points); FP32 also `export/fp32/max_abs_diff` of the raw outputs (logits, mask
  logits, detector head outputs) on a fixed test batch;
- cost: per-image CPU latency p50 / p95 at batch 1 and at the serving batch, throughput and
  file size for eager FP32, ONNX FP32 and ONNX INT8, and `export/int8/speedup` (eager p50
  over INT8 p50 at batch 1).

Writes exports/<task>/ (model.fp32.onnx, model.int8.onnx, meta.json) and
reports/<task>/export.json (flat, a DVC metric: what the gate reads), and attaches both to
the training's MLflow run under export/, with an ONNX pyfunc per format.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import mlflow
import numpy as np
import torch

from components.config import Params
from components.evaluation.suite import load_test_split
from components.paths import StagePaths
from components.runtime import tracking
from components.serving import benchmark
from components.serving.checkpoint import load_checkpoint
from components.serving.onnx_export import UnsupportedExport, export_onnx, graph_input, graph_of
from components.serving.onnx_model import drop_stale_formats, log_onnx_model
from components.serving.onnx_runtime import onnx_model
from components.serving.quantize import quantize_int8


def _metrics(spec, model, samples, classes, batch_size) -> dict[str, float]:
    from components.evaluation.predictions import metric_value, predict_all

    preds, targets = predict_all(spec, model, samples, batch_size)
    return metric_value(spec, len(classes), classes, preds, targets)


def _calibration(data, count: int, seed: int, batch_size: int):
    """A seeded sample of the train split (eval transform: what the model sees when served)."""
    train = data.dataset("train")
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    for start in range(0, len(keep), batch_size):
        yield torch.stack([train[i][0] for i in keep[start:start + batch_size]]).numpy()


def _raw_outputs(model, batch: torch.Tensor) -> list[np.ndarray]:
    graph, _ = graph_of(model)
    with torch.no_grad():
        out = graph(graph_input(model, batch))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def run(params: Params, task: str) -> dict[str, Any]:
    cfg, paths = params.task(task), StagePaths(task)
    ex = cfg.export
    shutil.rmtree(paths.export_dir, ignore_errors=True)
    paths.export_dir.mkdir(parents=True)
    paths.export_report.parent.mkdir(parents=True, exist_ok=True)
    if not ex.enabled:
        (paths.export_dir / "DISABLED").write_text("tasks.<task>.export.enabled is false\n")
        paths.export_report.write_text("{}")
        print(f"{task} export: disabled (tasks.{task}.export.enabled)")
        return {}
    run_id = tracking.training_run(params, paths.run_info)
    started = time.perf_counter()
    model, meta = load_checkpoint(paths.model)
    data = load_test_split(meta, paths.data, cfg.train.batch_size, str(paths.model))
    spec, classes, bs = data.spec, data.classes, cfg.train.batch_size
    test = data.dataset("test")
    samples = [test[i] for i in range(len(test))]
    (paths.export_dir / "meta.json").write_text(json.dumps(meta, indent=2))

    report: dict[str, Any] = {}
    with benchmark.threads(ex.threads):
        eager = _metrics(spec, model, samples, classes, bs)
    monitor = spec.monitor
    fp32 = paths.export_dir / "model.fp32.onnx"
    try:
        export_onnx(model, meta["image_size"], fp32)
    except UnsupportedExport as exc:
        paths.export_report.write_text(json.dumps({"export/supported": 0.0}, indent=2))
        print(f"{task} export: skipped, {exc}")
        return {}
    formats = {"fp32": fp32}
    if ex.int8:
        formats["int8"] = quantize_int8(fp32, paths.export_dir / "model.int8.onnx", _calibration(data, ex.calibration_images, params.seed, bs))
    export_s = time.perf_counter() - started

    parity = torch.stack([s[0] for s in samples[:ex.parity_batch]])
    reference = _raw_outputs(model, parity)
    side = meta["image_size"]
    one, serving = torch.randn(1, 3, side, side), torch.randn(ex.serving_batch, 3, side, side)

    def cost(prefix: str, predict, size: int | None) -> None:
        for name, batch in (("b1", one), (f"b{ex.serving_batch}", serving)):
            for k, v in benchmark.latency(predict, batch, ex.warmup, ex.runs).items():
                report[f"{prefix}/latency_{name}_{k}" if k != "images_per_s" else f"{prefix}/{name}_images_per_s"] = v
        if size is not None:
            report[f"{prefix}/size_mb"] = size / 2**20

    with benchmark.threads(ex.threads):
        cost("export/eager", lambda b: spec.predict(model, b), sum(p.numel() * p.element_size() for p in model.state_dict().values()))
        for fmt, path in formats.items():
            exported = onnx_model(path, meta, ex.threads)
            values = _metrics(spec, exported, samples, classes, bs)
            report[f"export/{fmt}/{monitor}"] = values[monitor]
            report[f"export/{fmt}/drop"] = eager[monitor] - values[monitor]
            report.update({f"export/{fmt}/{k}": v for k, v in values.items() if "/" not in k and k != monitor})
            cost(f"export/{fmt}", lambda b, m=exported: spec.predict(m, b), path.stat().st_size)
        if "fp32" in formats:
            session_outputs = onnx_model(fp32, meta, ex.threads).run(graph_input(model, parity))
            report["export/fp32/max_abs_diff"] = float(max(np.abs(a - b).max() for a, b in zip(reference, session_outputs, strict=True)))
    report[f"export/eager/{monitor}"] = eager[monitor]
    for fmt in formats:
        report[f"export/{fmt}/speedup"] = report["export/eager/latency_b1_p50_ms"] / report[f"export/{fmt}/latency_b1_p50_ms"]
    report["export/wall_s"] = time.perf_counter() - started
    report["export/export_s"] = export_s
    report["export/threads"] = float(ex.threads)  # of every latency figure (the card states it)
    paths.export_report.write_text(json.dumps(report, indent=2, sort_keys=True))

    tracking.setup(params, task)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({tracking.metric_key(k): v for k, v in report.items()})
        for path in [*formats.values(), paths.export_dir / "meta.json", paths.export_report]:
            mlflow.log_artifact(str(path), "export")
        for fmt, path in formats.items():  # idempotent: a rerun on this run replaces, never duplicates
            log_onnx_model(f"onnx-{fmt}", path, paths.export_dir / "meta.json", run_id)
        drop_stale_formats(run_id, set(formats))
    shown = "  ".join(f"{fmt}: {monitor} {report[f'export/{fmt}/{monitor}']:.4f} (drop {report[f'export/{fmt}/drop']:+.4f}), "
                      f"{report[f'export/{fmt}/speedup']:.2f}x" for fmt in formats)
    print(f"{task} export ({report['export/wall_s']:.0f} s): eager {monitor} {eager[monitor]:.4f}  {shown}  -> {paths.export_report}")
    return report

