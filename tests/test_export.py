"""The export stage on an untrained model of each task's configured arch (real ONNX Runtime,
real MLflow on SQLite): ONNX FP32 predicts what the torch model predicts, INT8 is produced
and measured, the figures land in export.json and on the training run, and
`cvops predict --runtime onnx` answers as the torch pyfunc does."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
import yaml

from components.config import load_params
from components.paths import StagePaths
from components.runtime import tracking
from components.tasks import TASKS
from tests.registry_helpers import (
    log_candidate,
    make_registry_workspace,
    split_images,
    write_candidate,
)

#: FP32 ONNX vs eager torch on the same inputs: ORT's fused kernels reorder float sums
OUTPUT_TOLERANCE = 1e-3  # max abs difference of logits / mask logits / detector head outputs
SCORE_TOLERANCE = 1e-3  # probabilities and box scores in the served records
BOX_TOLERANCE = 0.05  # pixels, box corners in the served records (rounded to 0.01 there)
TINY_EXPORT = {"enabled": True, "int8": True, "calibration_images": 16, "parity_batch": 4, "serving_batch": 4,
               "threads": 1, "warmup": 1, "runs": 3}


def exported_workspace(tmp_path, task, monkeypatch, export=TINY_EXPORT):
    """A workspace whose candidate (random weights) went through the export stage."""
    from components.stages import export as export_stage

    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["tasks"][task]["export"] = export
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    candidate = log_candidate(ws, task, seed=0)
    write_candidate(ws, task, candidate)
    paths = StagePaths(task)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws / "candidates" / f"{task}-0.pt", paths.model)
    report = export_stage.run(load_params(), task)
    return ws, candidate, report


def _mask(mask) -> np.ndarray:
    """A record's mask: class ids inline (the pyfunc's records) or, from `cvops predict`, the
    index PNG it wrote."""
    if isinstance(mask, dict):
        from PIL import Image

        return np.asarray(Image.open(mask["index"]))
    return np.asarray(mask)


def _close(torch_record: dict, onnx_record: dict) -> None:
    """The same prediction within the stated tolerances (labels and box counts exactly)."""
    if "detections" in torch_record:
        # order-free: near-equal scores (an untrained detector's are all ~0.08) may swap
        # places, and one at the detections-per-image cut may be in only one of the lists
        a, b = torch_record["detections"], onnx_record["detections"]
        assert abs(len(a) - len(b)) <= 1
        cut = min((d["score"] for d in a), default=0) + SCORE_TOLERANCE
        for x in (d for d in a if d["score"] > cut):
            assert any(x["label"] == y["label"] and abs(x["score"] - y["score"]) <= SCORE_TOLERANCE
                       and np.abs(np.subtract(x["box"], y["box"])).max() <= BOX_TOLERANCE for y in b), x
    elif "mask" in torch_record:
        a, b = (_mask(r["mask"]) for r in (torch_record, onnx_record))
        assert np.mean(a != b) < 1e-3
    else:
        assert torch_record["label"] == onnx_record["label"]
        for name, p in torch_record["probabilities"].items():
            assert abs(p - onnx_record["probabilities"][name]) <= SCORE_TOLERANCE



TASK_PARAMS = [pytest.param(t, marks=pytest.mark.slow) if t == "detection" else t for t in TASKS]  # detection: ~1 min


@pytest.mark.parametrize("task", TASK_PARAMS)
def test_export_stage_parity_cost_and_serving(tmp_path, monkeypatch, task):
    """One export per task, checked as a stage (export.json, the run) and as served."""
    ws, candidate, report = exported_workspace(tmp_path, task, monkeypatch)
    paths, monitor = StagePaths(task), TASKS[task].monitor
    assert json.loads(paths.export_report.read_text()) == pytest.approx(report)
    assert report["export/fp32/max_abs_diff"] < OUTPUT_TOLERANCE
    assert abs(report["export/fp32/drop"]) < 1e-6, "FP32 ONNX must score what the eager model scores"
    assert report[f"export/fp32/{monitor}"] == pytest.approx(report[f"export/eager/{monitor}"])
    assert np.isfinite(report["export/int8/drop"]) and report["export/int8/speedup"] > 0
    for fmt in ("eager", "fp32", "int8"):
        assert 0 < report[f"export/{fmt}/latency_b1_p50_ms"] <= report[f"export/{fmt}/latency_b1_p95_ms"]
        assert report[f"export/{fmt}/b4_images_per_s"] > 0 and report[f"export/{fmt}/size_mb"] > 0
    assert report["export/int8/size_mb"] < report["export/fp32/size_mb"]
    int8 = onnx.load(str(paths.export_dir / "model.int8.onnx")).graph
    dequantized = {o for n in int8.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in int8.node if n.op_type == "Conv"]
    assert not set(convs[0].input) & dequantized, "the conv reading the image stays FP32 (serving/quantize.py says why)"
    assert all(set(c.input) & dequantized for c in convs[1:]), "every other conv is quantized"
    client = mlflow.MlflowClient()
    attached = {a.path for a in client.list_artifacts(candidate.run_id, "export")}
    assert {"export/model.fp32.onnx", "export/model.int8.onnx", "export/meta.json", "export/export.json"} <= attached
    assert client.get_run(candidate.run_id).data.metrics[tracking.metric_key("export/int8/drop")] == pytest.approx(report["export/int8/drop"])
    images = pd.DataFrame({"image": [p.read_bytes() for p in split_images(ws, task, 4)]})
    torch_records = mlflow.pyfunc.load_model(candidate.model_uri).predict(images)
    logged = [m for m in mlflow.search_logged_models(output_format="list")
              if m.name == "onnx-fp32" and m.source_run_id == candidate.run_id]
    assert logged, "the export stage logs the ONNX pyfunc on the training run"
    onnx_records = mlflow.pyfunc.load_model(logged[0].model_uri).predict(images)
    assert set(torch_records[0]) == set(onnx_records[0])  # the same output schema
    for a, b in zip(torch_records, onnx_records, strict=True):
        _close(a, b)


def test_export_disabled_writes_an_empty_report(tmp_path, monkeypatch):
    from components.stages import export as export_stage

    ws = make_registry_workspace(tmp_path, "classification", monkeypatch)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["tasks"]["classification"]["export"] = {"enabled": False}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert export_stage.run(load_params(), "classification") == {}
    assert json.loads(StagePaths("classification").export_report.read_text()) == {}


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_cvops_predict_runtime_onnx_matches_torch(tmp_path, monkeypatch, task):
    """`cvops predict --runtime onnx` on the registered version: the torch path's records."""
    from components.cli import main
    from tests.registry_helpers import promote_candidate, set_gate

    ws, candidate, _ = exported_workspace(tmp_path, task, monkeypatch, {**TINY_EXPORT, "int8": False})
    set_gate(ws, task, {"cold_start": "promote", "thresholds": [{"metric": TASKS[task].monitor, "min": 0.0}]})
    promote_candidate(ws, task, candidate)
    images = [str(p) for p in split_images(ws, task, 3)]
    for runtime in ("torch", "onnx"):
        assert main(["predict", task, *images, "--out", f"out-{runtime}", "--runtime", runtime]) == 0
    torch_records, onnx_records = (json.loads((ws / f"out-{r}" / "predictions.json").read_text()) for r in ("torch", "onnx"))
    for a, b in zip(torch_records, onnx_records, strict=True):
        assert a["image"] == b["image"]
        _close(a, b)
    assert main(["predict", task, *images, "--runtime", "onnx-int8"]) == 2  # not exported: a clear error, exit 2


def test_onnx_models_on_a_run_are_logged_once_per_content(tmp_path, monkeypatch):
    """log_onnx_model / drop_stale_formats on a real SQLite store (the files' bytes are all
    they hash, so stand-ins do): the same content twice is one model, new content replaces it,
    a format no longer exported loses its model and its artifact."""
    from components.serving.onnx_model import drop_stale_formats, log_onnx_model, run_onnx_models

    ws = make_registry_workspace(tmp_path, "classification", monkeypatch)  # a migrated store, copied
    tracking.setup(load_params(), "classification")
    files = {name: ws / name for name in ("model.fp32.onnx", "model.int8.onnx", "meta.json")}
    for path in files.values():
        path.write_text(path.name)
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        for path in files.values():
            mlflow.log_artifact(str(path), "export")
        fp32 = log_onnx_model("onnx-fp32", files["model.fp32.onnx"], files["meta.json"], run_id)
        log_onnx_model("onnx-int8", files["model.int8.onnx"], files["meta.json"], run_id)
        assert log_onnx_model("onnx-fp32", files["model.fp32.onnx"], files["meta.json"], run_id) == fp32
        files["model.fp32.onnx"].write_text("re-exported")
        replaced = log_onnx_model("onnx-fp32", files["model.fp32.onnx"], files["meta.json"], run_id)
        assert replaced != fp32
        assert drop_stale_formats(run_id, {"fp32"}) == ["export/model.int8.onnx", "onnx-int8"]
    assert {m.name: m.model_id for m in run_onnx_models(run_id)} == {"onnx-fp32": replaced}
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "export")} == {"export/model.fp32.onnx", "export/meta.json"}


@pytest.mark.slow  # three export runs (~1 min on the loaded 2-core machine); the default suite has the one above
def test_rerunning_export_replaces_its_models_on_the_run(tmp_path, monkeypatch):
    """The stage reruns on the same training run (its params changed): one `onnx-<format>`
    model per format on the run, the same one when its content did not change, and none (nor
    its artifact) for a format switched off since."""
    from components.serving.onnx_model import run_onnx_models
    from components.stages import export as export_stage

    ws, candidate, _ = exported_workspace(tmp_path, "classification", monkeypatch)
    before = {m.name: m.model_id for m in run_onnx_models(candidate.run_id)}
    assert sorted(before) == ["onnx-fp32", "onnx-int8"]
    export_stage.run(load_params(), "classification")  # same params, same weights: nothing new
    assert {m.name: m.model_id for m in run_onnx_models(candidate.run_id)} == before
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["tasks"]["classification"]["export"]["int8"] = False
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    export_stage.run(load_params(), "classification")
    assert {m.name: m.model_id for m in run_onnx_models(candidate.run_id)} == {"onnx-fp32": before["onnx-fp32"]}
    attached = {a.path for a in mlflow.MlflowClient().list_artifacts(candidate.run_id, "export")}
    assert "export/model.fp32.onnx" in attached and "export/model.int8.onnx" not in attached


# modules a stage runs that no import names: MLflow loads them (models-from-code) by path
LOADED_BY_MLFLOW = {
    "components.serving.model": {"components.serving.pyfunc"},  # logged as the torch model's code
    "components.serving.onnx_model": {"components.serving.onnx_pyfunc"},  # and the ONNX models'
    "components.registry.promotion": {"components.serving.pyfunc"},  # loads the champion's pyfunc
}


def test_stage_deps_name_exactly_the_serving_modules_the_stage_runs():
    """dvc.yaml's deps of each stage cover the components/serving modules its code reaches
    and no other: editing an ONNX module reruns export (and promote after it), not training."""
    from tests.test_layout import ROOT, imports

    graph = imports()
    for module, extra in LOADED_BY_MLFLOW.items():
        graph[module] |= extra
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    serving = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "components/serving").glob("*.py") if p.name != "__init__.py")
    for stage, spec in stages.items():
        reached, todo = set(), [f"components.stages.{stage}"]
        while todo:
            for dep in graph[todo.pop()] - reached:
                reached.add(dep)
                todo.append(dep)
        runs = {f for f in serving if f.removesuffix(".py").replace("/", ".") in reached}
        named = {f for f in serving if any(f == d or f.startswith(d.rstrip("/") + "/") for d in spec["deps"])}
        assert named == runs, f"{stage}: deps name {sorted(named - runs)} it does not run, miss {sorted(runs - named)}"


def _figures(fmt: str, accuracy: float, p50: float) -> dict[str, float]:
    return {f"export/{fmt}/accuracy": accuracy, f"export/{fmt}/latency_b1_p50_ms": p50, f"export/{fmt}/latency_b1_p95_ms": 2 * p50,
            f"export/{fmt}/latency_b16_p50_ms": p50 / 2, f"export/{fmt}/latency_b16_p95_ms": p50, f"export/{fmt}/b16_images_per_s": 2000 / p50,
            f"export/{fmt}/size_mb": 1.0, f"export/{fmt}/drop": 0.96 - accuracy, f"export/{fmt}/speedup": 9.5 / p50}


def test_the_cards_export_section_says_what_is_served_and_why_not(tmp_path, monkeypatch):
    """The card's export section from an export.json and the verdict as gate.json / card.json
    store it (figures: the classification demo's, rounded)."""
    from components.serving.report import export_card_section, render_export

    report = {**_figures("eager", 0.96, 9.5), **_figures("fp32", 0.96, 0.29), **_figures("int8", 0.9411, 0.24),
              "export/fp32/max_abs_diff": 3.8e-06, "export/threads": 2.0, "export/wall_s": 66.0, "export/export_s": 43.0}
    rule = {"metric": "export/int8/drop", "rule": "<= 0.005 (else onnx-int8 is not served)", "value": 0.0189, "passed": False}
    verdict = {"passed": True, "servable": ["torch", "onnx-fp32"], "checks": [rule]}
    text = render_export(report, verdict, "accuracy")
    assert "**Servable**: `torch`, `onnx-fp32`." in text
    assert "**Withheld** `onnx-int8`: `export/int8/drop` 0.0189, rule <= 0.005" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 0.9411 | 0.0189 | - | 0.24 | 0.48 | 0.12 | 0.24 | 8333.3 | 39.58x | 1.00 |" in rows["ONNX INT8"]
    assert "3.8e-06" in rows["ONNX FP32"] and "2 CPU thread(s)" in text and "wall time 66 s" in text
    assert "Nothing is served" in render_export(report, {**verdict, "passed": False}, "accuracy")
    # in the card: pending until the verdict is in, then read from the stage's export.json
    monkeypatch.chdir(tmp_path)
    assert "PENDING" in export_card_section({"task": "classification"})
    (tmp_path / "reports" / "classification").mkdir(parents=True)
    (tmp_path / "reports" / "classification" / "export.json").write_text("{}")
    assert "Not exported" in export_card_section({"task": "classification", "verdict": verdict})
