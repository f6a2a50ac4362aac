"""Lineage of a model version: code, data, params, runs and package versions, recorded as
tags when the promote stage registers it (`cvops lineage` reads them back, see
lineage_report.py). Enough to rebuild the model from scratch in a fresh clone: where the
repository is and which commit, whether the working tree differed from it, the DVC hashes
of the data and the model, every param the task's stages depend on, and the DVC remote."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from components.config import Params
from components.paths import STAGES, StagePaths
from components.runtime.redact import redact

PACKAGES = ("torch", "torchvision", "lightning", "ray", "mlflow", "dvc", "prefect", "great-expectations")
DIRTY_FILES_SHOWN = 20


def git(*args: str, strip: bool = True) -> str:
    """`git ARGS`' output in the current directory ('' when git or the repository is missing)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.strip() if strip else out


def _lock_stages(lock_file: Path = Path("dvc.lock")) -> dict[str, Any]:
    if not lock_file.exists():
        return {}
    return (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})


def data_hash(stage: str, out_path: str, lock_file: Path = Path("dvc.lock")) -> str:
    """The DVC content hash of a stage's output, as recorded in dvc.lock ('' if not yet)."""
    for out in _lock_stages(lock_file).get(stage, {}).get("outs", []):
        if out.get("path") == out_path:
            return out.get("md5", "")
    return ""


def changed_inputs() -> list[str]:
    """Files of the working tree that differ from HEAD (modified, staged or untracked, not
    ignored), outside what the pipeline writes (dvc.lock, DVC's .gitignore entries and the
    data/, models/, reports/ outputs): if any, HEAD alone does not rebuild the model."""
    paths = StagePaths("_")
    outputs = {p.parts[0] for p in (paths.data, paths.model_dir, paths.metrics)}
    excludes = [":(exclude)dvc.lock", ":(exclude,glob)**/.gitignore", *(f":(exclude){o}" for o in sorted(outputs))]
    status = git("status", "--porcelain", "--untracked-files=all", "--", ".", *excludes, strip=False)
    return [line[3:] for line in status.splitlines() if line.strip()]  # "XY path"


def git_remote() -> str:
    """The URL others clone from: the current branch's upstream remote, else `origin`, else
    the first remote ('' when the repository has none)."""
    upstream = git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
    remotes = git("remote").split()
    for name in ([upstream.split("/")[0]] if upstream else []) + ["origin"] + remotes[:1]:
        if name in remotes:
            return git("remote", "get-url", name)
    return ""


def dvc_remote() -> str:
    """The default DVC remote's URL (local paths absolute), '' if none or not a DVC repo."""
    try:
        from dvc.config import Config

        config = Config.from_cwd()
        name = config["core"].get("remote")
        return str(config["remote"][name]["url"]) if name else ""
    except Exception:  # no DVC repo, a broken config: lineage is informative, never fatal
        return ""


def stage_params(params: Params, task: str, dvc_file: Path = Path("dvc.yaml")) -> dict[str, Any]:
    """Every param the task's stages depend on (dvc.yaml's `params` of each stage, for this
    task), by its dotted key, plus the Ray settings that change the arithmetic but not which
    stages rerun (threads per worker). Values as params.yaml has them."""
    raw = params.model_dump(mode="json")
    keys = ["ray.cpus_per_worker"]
    if dvc_file.exists():
        stages = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {})
        for stage in STAGES:
            for entry in stages.get(stage, {}).get("params", []):
                for key in entry if isinstance(entry, dict) else [entry]:
                    keys.append(str(key).replace("${item.task}", task))
    values = {}
    for key in dict.fromkeys(keys):
        node: Any = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            values[key] = node
    return values


def lineage_tags(task: str, data_dir: str, params_hash: str, run_id: str, params: Params | None = None) -> dict[str, str]:
    dirty = changed_inputs()
    tags = {
        "cvops.task": task,
        "cvops.git_commit": git("rev-parse", "HEAD"),
        "cvops.git_dirty": str(bool(dirty)).lower(),
        "cvops.git_dirty_files": json.dumps(dirty[:DIRTY_FILES_SHOWN] + (["..."] if len(dirty) > DIRTY_FILES_SHOWN else [])),
        "cvops.git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "cvops.git_remote": git_remote(),
        # the workspace, not the temporary copy an experiment runs in (`dvc exp run --temp`)
        "cvops.git_root": os.environ.get("CVOPS_ROOT") or git("rev-parse", "--show-toplevel"),
        "cvops.data_hash": data_hash(f"prepare@{task}", data_dir),
        "cvops.model_hash": data_hash(f"train@{task}", str(StagePaths(task).model_dir)),
        "cvops.dvc_remote": dvc_remote(),
        # set by `dvc exp run` (and so by `cvops run --set`) for the stages it runs
        "cvops.dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
        "cvops.dvc_experiment_baseline": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "cvops.params_hash": params_hash,
        "cvops.mlflow_run_id": run_id,
        "cvops.prefect_flow_run_id": os.environ.get("CVOPS_FLOW_RUN_ID", ""),
        "cvops.ray_address": os.environ.get("RAY_ADDRESS", "local"),
    }
    if params is not None:
        tags["cvops.params"] = json.dumps(stage_params(params, task), sort_keys=True)
    tags["cvops.platform"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"  # of the promoting host
    tags["cvops.version.python"] = platform.python_version()
    tags.update({f"cvops.version.{p}": version(p) for p in PACKAGES})
    return redact(tags)  # a remote's or an address's credentials never reach the registry or the card
