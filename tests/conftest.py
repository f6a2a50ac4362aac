"""Shared fixtures: a temporary git + DVC workspace with this project's pipeline and a
shrunk CPU config (tiny data, 2 epochs), and a real Prefect API on a temporary database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import components  # noqa: F401  (telemetry off)

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_FILES = ("components", "flows", "sources", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore")
BIN = Path(sys.executable).parent  # the project environment's bin/ (cvops, dvc)


def tiny_params(params: dict) -> dict:
    """The default params shrunk to run in seconds on a CPU: the same keys, less work."""
    from components.tasks import TASKS

    for name, task in params["tasks"].items():
        task["data"]["num_images"] = 90
        task["data"]["image_size"] = min(task["data"]["image_size"], 32)
        task["train"]["epochs"] = 2
        # a loose floor, no change checks: ~14 test images measure no fairness groups (tests/test_gate_matrix.py
        # checks the default gates)
        task["gate"]["thresholds"] = [{"metric": TASKS[name].monitor, "min": 0.0}]
        task["export"] = {**task.get("export", {}), "runs": 3, "warmup": 1, "serving_batch": 4, "calibration_images": 16}
        task["gate"]["changes"] = []
    params["ray"]["num_workers"] = 2
    params["pipeline"]["tasks"] = list(params["tasks"])  # every configured task, whatever the default
    return params


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_workspace(path: Path, edit=tiny_params) -> Path:
    """A git repo holding the project's pipeline files, with edited params, committed."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        source, target = ROOT / name, path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))  # sources/: links
        else:
            shutil.copy2(source, target)
    params = yaml.safe_load((path / "params.yaml").read_text())
    (path / "params.yaml").write_text(yaml.safe_dump(edit(params), sort_keys=False))
    git_init(path)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "workspace")
    return path


def git_init(path: Path) -> None:
    """A git repository at path with a committer identity (CI machines have none)."""
    git(path, "init", "-q")
    git(path, "config", "user.email", "tests@cvops.local")
    git(path, "config", "user.name", "cvops tests")


def dvc(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=ws, capture_output=True, text=True, env=stage_env())
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stage_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)  # each workspace has its own SQLite store
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API server on a temporary SQLite database, for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def built_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace on which `dvc repro` already ran the whole pipeline once."""
    ws = make_workspace(tmp_path_factory.mktemp("pipeline") / "ws")
    result = dvc(ws, "repro")
    assert "Running stage 'promote@classification'" in result.stdout, result.stdout
    return ws
