"""Registry test helpers: a workspace with tiny prepared data and a SQLite MLflow store, and
candidates that are untrained models logged as the real pyfunc (no training needed)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
import yaml
from mlflow import MlflowClient

from components.config import load_params
from components.data.datamodule import CVDataModule
from components.evaluation.suite import metrics_on_test_split
from components.paths import StagePaths
from components.runtime import tracking
from components.serving.checkpoint import load_checkpoint, save_checkpoint
from components.serving.model import log_model
from components.stages import prepare
from components.tasks import get_task
from tests.conftest import ROOT, tiny_params


@dataclass(frozen=True)
class LoggedCandidate:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def make_registry_workspace(tmp_path: Path, task: str, monkeypatch) -> Path:
    """tmp_path/ws with this project's params (tiny data), the task's data prepared and an
    empty MLflow store, as cwd. Data and store are built once per session and copied."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    template = tmp_path.parent / f"registry-template-{task}"  # the session's pytest base dir
    if not (template / "mlruns.db").exists():
        template.mkdir(exist_ok=True)
        params = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
        (template / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        monkeypatch.chdir(template)
        prepare.run(load_params(), task)
        # the schema migrations take seconds; the experiment keeps artifacts per workspace
        MlflowClient(f"sqlite:///{template / 'mlruns.db'}").search_experiments()
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)  # sources/<task>: links
    monkeypatch.chdir(ws)
    return ws


def set_gate(ws: Path, task: str, gate: dict) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["tasks"][task]["gate"] = gate
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def split_images(ws: Path, task: str, n: int) -> list[Path]:
    """The first n test-split image files of the task's prepared data."""
    root = ws / StagePaths(task).data
    records = [r for r in get_task(task).read_records(root) if r["split"] == "test"]
    return [root / r["path"] for r in records[:n]]


def log_candidate(ws: Path, task: str, seed: int, metrics: dict[str, float] | None = None) -> LoggedCandidate:
    """A random-weight model of the task's configured arch, checkpointed and logged as the
    pyfunc in a new run; `metrics` default to its real test metrics."""
    params = load_params()
    cfg, spec, paths = params.task(task), get_task(task), StagePaths(task)
    classes = CVDataModule(paths.data, spec, cfg.data.image_size, cfg.train.batch_size).classes
    torch.manual_seed(seed)
    checkpoint = ws / "candidates" / f"{task}-{seed}.pt"
    save_checkpoint(checkpoint, task, cfg.model.arch, classes, cfg.data.image_size,
                    spec.build_model(cfg.model.arch, len(classes)))
    if metrics is None:
        model, meta = load_checkpoint(checkpoint)
        metrics = metrics_on_test_split(model, meta, paths.data, cfg.train.batch_size)
    with mlflow.start_run(experiment_id=tracking.setup(params, task), run_name=f"{task}-candidate-{seed}") as run:
        info = log_model(checkpoint)
    return LoggedCandidate(run.info.run_id, info.model_uri, metrics)


def write_candidate(ws: Path, task: str, candidate: LoggedCandidate) -> None:
    """What the evaluate and train stages leave for promote: metrics JSON and run info."""
    paths = StagePaths(task)
    (ws / paths.metrics).parent.mkdir(parents=True, exist_ok=True)
    (ws / paths.metrics).write_text(json.dumps(candidate.metrics))
    (ws / paths.run_info).parent.mkdir(parents=True, exist_ok=True)
    (ws / paths.run_info).write_text(json.dumps({"run_id": candidate.run_id, "model_uri": candidate.model_uri}))


def promote_candidate(ws: Path, task: str, candidate: LoggedCandidate) -> dict:
    """Run the promote stage on `candidate`; returns gate.json."""
    from components.stages import promote

    write_candidate(ws, task, candidate)
    promote.run(load_params(), task)
    return json.loads((ws / StagePaths(task).verdict).read_text())
