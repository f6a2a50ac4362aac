"""`cvops submit`: run one pipeline stage as a Ray Job on a cluster (`ray job submit`).

The job's working directory is this repository (code, params.yaml, dvc.yaml and, for the
built-in datasets, data/); the entrypoint is the same `cvops stage` command dvc.yaml runs,
so inside the job Ray steps join the job's cluster (Ray sets RAY_ADDRESS for a job's
driver). Needs the cluster's job server: the dashboard port (8265) of a head started with
ray[default] (KubeRay's images have it), and the cluster's auth token (RAY_AUTH_MODE=token).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

# never uploaded: environments, caches, local stores, large outputs (the job writes its own)
EXCLUDES = [".venv", ".git", ".dvc/cache", ".dvc/tmp", "mlartifacts", "mlruns.db", "ray_results", "**/__pycache__"]


def command(stage: str, task: str, address: str | None, extra_env: dict[str, str] | None = None) -> list[str]:
    """The `ray job submit` command line for `cvops stage <stage> --task <task>`."""
    env = {"RAY_AUTH_MODE": "token", **(extra_env or {})}
    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        if os.environ.get(key):  # the job logs to the team's MLflow server, not a local SQLite
            env.setdefault(key, os.environ[key])
    runtime_env = {"excludes": EXCLUDES, "env_vars": env}
    cmd = ["ray", "job", "submit", "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env)]
    if address:
        cmd += ["--address", address]
    return cmd + ["--", "python", "-m", "components.cli", "stage", stage, "--task", task]


def submit(stage: str, task: str, address: str | None, dry_run: bool) -> int:
    cmd = command(stage, task, address)  # no address: `ray job` reads RAY_API_SERVER_ADDRESS / RAY_ADDRESS
    print(shlex.join(cmd), flush=True)
    if dry_run:
        return 0
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    return subprocess.run(cmd, env=env, stdout=sys.stdout, stderr=sys.stderr).returncode
