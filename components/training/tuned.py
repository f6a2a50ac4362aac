"""The task config a training uses: params.yaml's, with the tune stage's best overrides
(reports/<task>/tune.json) applied."""

from __future__ import annotations

import json
from typing import Any

from components.config import Params, TaskConfig
from components.paths import StagePaths


def tuned_config(params: Params, task: str) -> tuple[TaskConfig, dict[str, Any]]:
    """The task config with the tune stage's best overrides applied, and the tune.json read."""
    cfg, path = params.task(task), StagePaths(task).tune_result
    if not path.is_file():
        print(f"no {path}: training with params.yaml's config (the tune stage writes it)", flush=True)
        return cfg, {}
    tuned = json.loads(path.read_text())
    return apply_overrides(cfg, tuned.get("best_config", {})), tuned


def apply_overrides(cfg: TaskConfig, overrides: dict[str, Any]) -> TaskConfig:
    """`{"train.lr": 0.01, ...}` on top of the task config, validated like params.yaml."""
    raw = cfg.model_dump()
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        raw[section][leaf] = value
    return TaskConfig.model_validate(raw)
