"""Connecting to Ray: a cluster when RAY_ADDRESS (or params ray.address) is set, else a
local one started for the duration of the stage."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from components.config import Params

# Environment of every Ray worker: no telemetry, and plain print() (Train's print patch
# routes prints through the root logger and, with a wrapped stdout, prints them twice).
WORKER_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    **{k: os.environ[k] for k in ("DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED") if k in os.environ},
}


def setup_worker() -> None:
    """Runs in every Ray worker process of the stage (Train workers, the Train controller, its
    placement-group cleaner). Ray Train's own console lines are quieted by RunConfig's
    LoggingConfig (components.stages.train), not here: Train reconfigures its loggers after this hook.

    The cleaner asks the State API whether the controller is alive; the State API finds its
    cluster through RAY_ADDRESS, else by looking for running clusters on the host, which fails
    ("Found multiple active Ray instances") where several run side by side. So: this worker's
    own cluster. A local cluster has no State API (no dashboard): the cleaner warns once a
    second there, and has nothing to clean (the cluster ends with the stage)."""
    import logging
    import warnings

    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning vs torch pytree deprecation


def connect(params: Params) -> tuple[bool, bool]:
    """Initialise Ray; returns (use_gpu, started_here)."""
    import ray

    started_here = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or params.ray.address
        # the Train controller reads the start timeout: a run whose workers cannot be placed
        # fails after it instead of waiting forever
        env = {**WORKER_ENV, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(params.ray.worker_start_timeout_s)}
        runtime_env = {"env_vars": env, "worker_process_setup_hook": setup_worker}
        if address:
            os.environ.setdefault("RAY_AUTH_MODE", "token")  # 2.60 clusters require the token
            ray.init(address=address, runtime_env=runtime_env)
        else:
            # "local": a fresh cluster for this stage, never one that `ray start` left running;
            # no cloud preemption to watch for on a local machine
            runtime_env["env_vars"] = {**env, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
            _loopback_only()
            for attempt in range(1, START_ATTEMPTS + 1):
                before = _children()
                try:
                    ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, _node_ip_address=LOOPBACK,
                             _system_config=LOCAL_SYSTEM_CONFIG)
                    break
                except Exception as exc:  # Ray waits a fixed 30 s for its raylet: too short on a loaded machine
                    ray.shutdown()
                    _stop_new_children(before)
                    if attempt == START_ATTEMPTS or "timed out during startup" not in str(exc):
                        raise
                    print("the local Ray node did not register within Ray's 30 s (a loaded machine?): starting it again",
                          flush=True)
            started_here = True
    return use_gpu(params), started_here


LOOPBACK = "127.0.0.1"


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _stop_new_children(before: set[int]) -> None:
    """The processes of a local start that failed (GCS, monitors, dashboard): ray.shutdown()
    does not know a node it never finished starting, and left running they starve the next
    attempt of the CPU it lacked (seen: two attempts' GCS side by side under load 25)."""
    import psutil

    stop_processes([p for p in psutil.Process().children(recursive=True) if p.pid not in before], timeout=10)


def stop_processes(processes, timeout: float) -> None:
    """SIGTERM each process, SIGKILL those still alive after `timeout` s, and reap them."""
    import psutil

    processes = list(processes)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)
# Ray gives its raylet a fixed 30 s to register; a niced stage on a machine loaded by others
# (load 15-20 on 2 cores, measured) can miss it twice in a row
START_ATTEMPTS = 3
# Ray reaps a worker idle for 1 s: the Ray Data read tasks (num_cpus=0, beyond the soft limit)
# then cost a fresh worker (~2 CPU-s) 2-4 times an epoch; a stage's cluster lives only as long
# as the stage, so keep them (training input at 128 px: 231 -> 671 images per CPU-s, RESULTS.md)
LOCAL_SYSTEM_CONFIG = {"kill_idle_workers_interval_ms": 0}


def _loopback_only() -> None:
    """Bind every server of a local cluster (GCS, raylet, object manager, workers, dashboard and
    runtime-env agents, metrics) to 127.0.0.1. Ray turns `_node_ip_address="127.0.0.1"` into
    the machine's routable IP unless clusters are disabled, as it does on macOS and Windows
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): then the node is 127.0.0.1 and Ray's gRPC servers
    bind to loopback only. The variable is read at import (hence the constant, for a `ray`
    already imported) and by the cluster's processes, which inherit this environment."""
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def use_gpu(params: Params) -> bool:
    """`ray.use_gpu`, with auto meaning: GPU workers when the cluster has GPUs."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    return bool(gpus) if params.ray.use_gpu == "auto" else bool(params.ray.use_gpu)


def dataset_root(params: Params, task_data: Path) -> str:
    """The dataset path the workers read. Default: the driver's absolute path (one machine, or
    every node mounting the repository at the same path). With `ray.shared_data_dir` (a path
    all nodes mount, e.g. NFS), the dataset is copied there once per content version: the
    directory name carries the manifest's hash (the manifest lists every image's sha256)."""
    import hashlib
    import shutil

    if not params.ray.shared_data_dir:
        return str(task_data.resolve())
    manifest = task_data / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no manifest to version the dataset by; run the prepare stage first")
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]
    target = Path(params.ray.shared_data_dir).resolve() / f"{task_data.name}-{digest}"
    if not target.is_dir():
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.copytree(task_data, staging)
        try:
            staging.rename(target)  # atomic: a concurrent reader never sees half a dataset
        except OSError:  # staged meanwhile by a concurrent stage: same content
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def shutdown() -> None:
    import ray

    ray.shutdown()


def resolve_init(init_from: str | None, params: Params) -> str | None:
    """A local path to the checkpoint to start from: a file, or `models:/<name>@<alias>`
    (or `models:/<name>/<version>`) from the MLflow registry."""
    if not init_from:
        return None
    if not init_from.startswith("models:/"):
        path = Path(init_from)
        if not path.is_file():
            raise FileNotFoundError(f"model.init_from: checkpoint '{path}' does not exist; give a .pt written by the train stage or a models:/ URI")
        return str(path.resolve())
    from components.runtime import tracking

    tracking.setup(params)
    return str(registered_checkpoint(init_from))


def registered_checkpoint(model_uri: str) -> Path:
    """The checkpoint inside a registered cvops pyfunc: download the model directory and
    follow its MLmodel (python_function.artifacts.checkpoint.path), the layout MLflow wrote."""
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    if "checkpoint" not in artifacts:
        raise ValueError(f"{model_uri}: its MLmodel has no python_function artifact 'checkpoint'; init_from needs a model logged by the cvops train stage")
    return (local / artifacts["checkpoint"]["path"]).resolve()
