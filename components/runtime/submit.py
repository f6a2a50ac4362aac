"""`cvops submit`: run one pipeline stage as a Ray Job on a cluster (`ray job submit`).

The job's working directory is this repository (code, params.yaml, dvc.yaml and the stage's
inputs, e.g. data/); the entrypoint is the same `cvops stage` command dvc.yaml runs, so inside
the job Ray steps join the job's cluster (Ray sets RAY_ADDRESS for a job's driver). Needs the
cluster's job server: the dashboard port (8265) of a head started with ray[default] (KubeRay's
images have it), and the cluster's auth token (RAY_AUTH_MODE=token).

What the job writes: the MLflow run (and logged model) goes to MLFLOW_TRACKING_URI, forwarded
to the job in its runtime_env (a file readable by this user only, never the command line); the stage's DVC outputs (models/, reports/) are written inside the job's working
directory on the head node, which Ray does not copy back. The job is outside DVC: dvc.lock
does not change.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.runtime.redact import redact
from components.runtime.tools import with_tools

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
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
             "MLFLOW_TRACKING_TOKEN")


def submission_id(stage: str, task: str) -> str:
    """A readable job id (`ray job status/logs/stop <id>`)."""
    return f"cvops-{stage}-{task}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def runtime_env(extra_env: dict[str, str] | None = None) -> dict:
    """The job's runtime_env: what to upload and its environment (the forwarded variables)."""
    env = {"RAY_AUTH_MODE": "token", **(extra_env or {})}
    for key in FORWARDED:
        if os.environ.get(key):
            env.setdefault(key, os.environ[key])
    return {"excludes": EXCLUDES, "env_vars": env}


def command(stage: str, task: str, address: str | None, runtime_env_file: str = "RUNTIME_ENV.yaml",
            job_id: str | None = None) -> list[str]:
    """The `ray job submit` command line for `cvops stage <stage> --task <task>`. The runtime
    env (and so the credentials it forwards) is in a file only this user can read, never on
    the command line: any local user can read a process's argv in /proc/<pid>/cmdline."""
    cmd = ["ray", "job", "submit", "--submission-id", job_id or submission_id(stage, task),
           "--working-dir", ".", "--runtime-env", runtime_env_file]
    if address:
        cmd += ["--address", address]
    return cmd + ["--", "python", "-m", "components.cli", "stage", stage, "--task", task]


def submit(stage: str, task: str, address: str | None, dry_run: bool) -> int:
    """Submit, follow the job's logs, return its exit status (0: SUCCEEDED)."""
    import yaml

    env_spec = runtime_env()
    with tempfile.TemporaryDirectory(prefix="cvops-submit-") as private:  # mode 0700: this user only
        env_file = Path(private) / "runtime_env.yaml"
        env_file.write_text(yaml.safe_dump(env_spec))
        env_file.chmod(0o600)
        cmd = command(stage, task, address, str(env_file))  # no address: `ray job` reads RAY_ADDRESS
        print(redact(shlex.join(cmd)), flush=True)
        print(f"runtime env: {json.dumps(redact(env_spec['env_vars']))}", flush=True)
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            print("cvops submit: MLFLOW_TRACKING_URI is not set, so the job logs to params.yaml's tracking.uri "
                  "inside its working directory on the cluster, which is not kept; set it to your MLflow "
                  "server to keep the run and the model", file=sys.stderr, flush=True)
        if dry_run:
            return 0
        # token auth stays on; upload DVC's gitignored outputs too (EXCLUDES is the one list);
        # `ray` of this environment, activated or not
        env = with_tools({**os.environ, "RAY_AUTH_MODE": "token", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE": "1"})
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1) as process:
            for line in process.stdout:  # the job's log, as any other output: redacted
                print(redact(line), end="", flush=True)
        return process.returncode
