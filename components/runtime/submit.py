"""`cvops submit`: run one pipeline stage as a Ray Job on a cluster (`ray job submit`).

The job's working directory is this repository (code, params.yaml, dvc.yaml and the stage's
inputs, e.g. data/); the entrypoint is the same `cvops stage` command dvc.yaml runs, so inside
the job Ray steps join the job's cluster (Ray sets RAY_ADDRESS for a job's driver). Needs the
cluster's job server: the dashboard port (8265) of a head started with ray[default] (KubeRay's
images have it), and the cluster's auth token (RAY_AUTH_MODE=token).

What the job writes: the MLflow run (and logged model) goes to MLFLOW_TRACKING_URI, forwarded
to the job; the stage's DVC outputs (models/, reports/) are written inside the job's working
directory on the head node, which Ray does not copy back. The job is outside DVC: dvc.lock
does not change.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

# Never uploaded: environments, caches, local stores and servers' state (the job writes its
# own). Ray also skips what .gitignore lists, unless told not to: submit() tells it not to,
# because DVC gitignores its outputs (data/<task>, models/<task>), which are the inputs of a
# later stage.
EXCLUDES = [".venv", ".git", ".dvc/cache", ".dvc/tmp", "mlartifacts", "mlruns.db", "ray_results",
            "**/__pycache__", "/.prefect", "/.cvops", "/.dvc-storage", "/tmp", ".pytest_cache", ".ruff_cache",
            "*.egg-info"]
# Forwarded to the job when set here: where to log (the team's MLflow server, its S3 store).
# Disjoint from the worker env that components.runtime.ray_cluster sets: Ray refuses to merge a job's
# and its driver's runtime_env when both set the same variable.
FORWARDED = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY")
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # forwarded, never printed


def submission_id(stage: str, task: str) -> str:
    """A readable job id (`ray job status/logs/stop <id>`)."""
    return f"cvops-{stage}-{task}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def command(stage: str, task: str, address: str | None, extra_env: dict[str, str] | None = None,
            job_id: str | None = None) -> list[str]:
    """The `ray job submit` command line for `cvops stage <stage> --task <task>`."""
    env = {"RAY_AUTH_MODE": "token", **(extra_env or {})}
    for key in FORWARDED:
        if os.environ.get(key):
            env.setdefault(key, os.environ[key])
    runtime_env = {"excludes": EXCLUDES, "env_vars": env}
    cmd = ["ray", "job", "submit", "--submission-id", job_id or submission_id(stage, task),
           "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env)]
    if address:
        cmd += ["--address", address]
    return cmd + ["--", "python", "-m", "components.cli", "stage", stage, "--task", task]


def redacted(cmd: list[str]) -> list[str]:
    """The command as it may be printed or logged: credentials' values replaced by ***."""
    at = cmd.index("--runtime-env-json") + 1
    runtime_env = json.loads(cmd[at])
    runtime_env["env_vars"] = {k: "***" if k in SECRETS else v for k, v in runtime_env["env_vars"].items()}
    return [*cmd[:at], json.dumps(runtime_env), *cmd[at + 1:]]


def submit(stage: str, task: str, address: str | None, dry_run: bool) -> int:
    """Submit, follow the job's logs, return its exit status (0: SUCCEEDED)."""
    cmd = command(stage, task, address)  # no address: `ray job` reads RAY_API_SERVER_ADDRESS / RAY_ADDRESS
    print(shlex.join(redacted(cmd)), flush=True)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        print("cvops submit: MLFLOW_TRACKING_URI is not set, so the job logs to params.yaml's tracking.uri "
              "inside its working directory on the cluster, which is not kept; set it to your MLflow "
              "server to keep the run and the model", file=sys.stderr, flush=True)
    if dry_run:
        return 0
    # token auth stays on; upload DVC's gitignored outputs too (EXCLUDES is the one list)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE": "1"}
    return subprocess.run(cmd, env=env, stdout=sys.stdout, stderr=sys.stderr).returncode
