"""Where each stage reads and writes, per task (relative to the repo root; dvc.yaml declares
the same paths as deps and outs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the pipeline's stages in order, as dvc.yaml declares them (each one `cvops stage <name>`)
STAGES = ("prepare", "validate", "tune", "train", "evaluate", "export", "promote")


@dataclass(frozen=True)
class StagePaths:
    task: str

    @property
    def data(self) -> Path:  # canonical dataset (prepare's out)
        return Path("data") / self.task

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.csv"

    @property
    def validation(self) -> Path:  # data-contract summary, rules and failures (validate's out)
        return Path("reports") / self.task / "validation.json"

    @property
    def validation_metrics(self) -> Path:  # its numbers (validate's metrics: write_metrics)
        return Path("reports") / self.task / "validation_metrics.json"

    @property
    def tune_result(self) -> Path:  # tune's out: the best config, read by train
        return Path("reports") / self.task / "tune.json"

    @property
    def model_dir(self) -> Path:  # train's out
        return Path("models") / self.task

    @property
    def model(self) -> Path:
        return self.model_dir / "model.pt"

    @property
    def run_info(self) -> Path:  # train's other out: its MLflow run and logged model
        # not in model_dir, so that the model output's DVC hash is the weights' alone and a
        # deterministic retraining reproduces it (the run id is new on every run)
        return Path("reports") / self.task / "train_run.json"

    @property
    def evaluation(self) -> Path:  # evaluate's outs
        return Path("reports") / self.task / "evaluation"

    @property
    def curves(self) -> Path:  # evaluate's plot data, one series per file (DVC plots with x/y)
        return Path("reports") / self.task / "curves"

    @property
    def metrics(self) -> Path:
        return Path("reports") / self.task / "metrics.json"

    @property
    def export_dir(self) -> Path:  # export's out: model.fp32.onnx, model.int8.onnx, meta.json
        return Path("exports") / self.task

    @property
    def export_report(self) -> Path:  # export's metrics: parity, drops, latency, sizes (the gate reads it)
        return Path("reports") / self.task / "export.json"

    @property
    def verdict(self) -> Path:  # promote's out: the verdict, its checks and table
        return Path("reports") / self.task / "gate.json"

    @property
    def gate_metrics(self) -> Path:  # its numbers (promote's metrics: write_metrics)
        return Path("reports") / self.task / "gate_metrics.json"


def write_metrics(path: Path, report: dict[str, Any]) -> dict[str, int | float]:
    """The numbers of a stage's report as the file dvc.yaml declares as that stage's `metrics`:
    top-level ints and floats, booleans as 1 / 0; strings, lists and None dropped. `dvc metrics show` and `dvc exp show` then hold one
    comparable column per number; the report itself (rules, reasons, checks) is a plain out."""
    numbers: dict[str, int | float] = {}
    for key, value in report.items():
        if isinstance(value, bool):
            numbers[key] = int(value)
        elif isinstance(value, int | float):
            numbers[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(numbers, indent=2) + "\n")
    return numbers
