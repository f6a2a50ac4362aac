"""Lineage of a model version: code, data, params, runs and package versions."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version
from pathlib import Path

import yaml

PACKAGES = ("torch", "torchvision", "lightning", "ray", "mlflow", "dvc", "prefect", "great-expectations")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def data_hash(stage: str, out_path: str, lock_file: Path = Path("dvc.lock")) -> str:
    """The DVC content hash of a stage's output, as recorded in dvc.lock ('' if not yet)."""
    if not lock_file.exists():
        return ""
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    for out in stages.get(stage, {}).get("outs", []):
        if out.get("path") == out_path:
            return out.get("md5", "")
    return ""


def lineage_tags(task: str, data_dir: str, params_hash: str, run_id: str) -> dict[str, str]:
    tags = {
        "cvops.task": task,
        "cvops.git_commit": _git("rev-parse", "HEAD"),
        "cvops.git_dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "cvops.data_hash": data_hash(f"prepare@{task}", data_dir),
        "cvops.params_hash": params_hash,
        "cvops.mlflow_run_id": run_id,
        "cvops.prefect_flow_run_id": os.environ.get("CVOPS_FLOW_RUN_ID", ""),
        "cvops.ray_address": os.environ.get("RAY_ADDRESS", "local"),
    }
    tags.update({f"cvops.version.{p}": version(p) for p in PACKAGES})
    return tags
