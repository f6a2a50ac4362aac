"""The gate's list of metric names (checked at params load) is what the suite really writes:
run_suite on a random-weight model over the tiny test split, every key accounted for."""

from __future__ import annotations

import pytest
import torch

from components.config import load_params
from components.data.datamodule import CVDataModule
from components.evaluation.gate_metrics import metric_names
from components.evaluation.suite import run_suite
from components.paths import StagePaths
from components.tasks import METRICS, TASKS
from tests.registry_helpers import make_registry_workspace


@pytest.mark.parametrize("task", [pytest.param(t, marks=() if t == "classification" else pytest.mark.slow) for t in TASKS])
def test_metric_names_cover_what_the_suite_writes(task, tmp_path, monkeypatch):
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    params = load_params(ws / "params.yaml")
    cfg, spec = params.task(task), TASKS[task]
    data = CVDataModule(StagePaths(task).data, spec, cfg.data.image_size, cfg.train.batch_size)
    torch.manual_seed(0)
    model = spec.build_model(cfg.model.arch, len(data.classes))
    written = run_suite(params, task, model, data)["metrics"]
    names, prefixes = metric_names(task, spec.monitor, cfg.evaluate)
    unknown = [k for k in written if k not in names and not any(p and k.startswith(p) for p in prefixes)]
    assert unknown == []
    assert set(METRICS[task]) <= set(written) and "robustness/retention" in written
    assert {f"adversarial/pgd_{spec.monitor}@{e:g}" for e in cfg.evaluate.eps} <= set(written)
