"""Resuming an interrupted train stage: rerun with the same inputs, it continues from the last
checkpoint in `ray.storage_path` instead of starting again (a killed driver, a lost head node,
a preempted Ray Job, a Prefect retry).

While a training runs, its Ray Train run directory is `<storage>/<task>-<fingerprint>`. The
fingerprint hashes what the result depends on: the task's model, train and data config (after
the tune stage's overrides), seed, number of workers, precision, the dataset's manifest (every
image's sha256) and the code of components/. `cvops_run.json`, next to the checkpoints, records
those inputs, the fingerprint and the MLflow run. Ray Train (V2) restores a run whose name and
storage path it meets again, so the rerun's workers get the latest checkpoint from
`ray.train.get_checkpoint()`, and the driver logs the remaining epochs to the same MLflow run.
A finished training's directory is renamed `<task>-<MLflow run id>`: a later run with the same
inputs (`dvc repro -f`) starts fresh. Other inputs: another directory, a fresh start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs

from components.config import Params, TaskConfig
from components.paths import StagePaths

MARKER = "cvops_run.json"
SNAPSHOT = "checkpoint_manager_snapshot.json"  # written by Ray Train's checkpoint manager
CODE = Path(__file__).parents[1]  # all of components/


def training_inputs(params: Params, task: str, cfg: TaskConfig) -> dict[str, Any]:
    """What a training's result depends on (JSON-able)."""
    manifest = StagePaths(task).manifest
    code = hashlib.sha256()
    for path in sorted(CODE.rglob("*.py")):
        code.update(str(path.relative_to(CODE)).encode() + b"\0" + path.read_bytes())
    return {
        "task": task, "seed": params.seed, "num_workers": params.ray.num_workers, "precision": params.ray.precision,
        **{section: getattr(cfg, section).model_dump(mode="json") for section in ("model", "train", "data")},
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None,
        "code_sha256": code.hexdigest(),
    }


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@dataclass
class Slot:
    """Where a training runs in the Ray storage, and the MLflow run to continue (or None)."""

    storage: str  # ray.storage_path: an absolute path or a URI
    task: str
    inputs: dict[str, Any]
    name: str = ""  # the Ray Train run name (a directory under storage)
    resume_run_id: str | None = None
    fs: pyarrow.fs.FileSystem = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(self.storage)
        self.fingerprint = fingerprint(self.inputs)
        self.name = self.name or f"{self.task}-{self.fingerprint[:12]}"

    def path(self, *parts: str) -> str:
        return "/".join((self.root, self.name, *parts))

    def find_interrupted(self) -> None:
        """Sets resume_run_id when this directory holds an unfinished training of the same inputs
        with at least one checkpoint."""
        marker = self._read(MARKER)
        if marker and marker.get("fingerprint") == self.fingerprint and self._exists(SNAPSHOT):
            self.resume_run_id = marker.get("mlflow_run_id")

    def start(self, run_id: str) -> None:
        self.fs.create_dir(self.path())
        record = {"fingerprint": self.fingerprint, "mlflow_run_id": run_id, "inputs": self.inputs}
        with self.fs.open_output_stream(self.path(MARKER)) as out:
            out.write(json.dumps(record, indent=2).encode())

    def finish(self, run_id: str) -> str:
        """Moves the finished training aside (no longer resumable); returns its new name."""
        done = f"{self.task}-{run_id[:8]}"
        self.fs.move(self.path(), "/".join((self.root, done)))
        return done

    def _exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pyarrow.fs.FileType.NotFound

    def _read(self, name: str) -> dict | None:
        if not self._exists(name):
            return None
        with self.fs.open_input_stream(self.path(name)) as stream:
            return json.loads(stream.read())


@contextlib.contextmanager
def slot(storage: str, task: str, inputs: dict[str, Any]) -> Iterator[Slot]:
    """The training's slot for these inputs, held for the duration of the training. On a local
    storage path a lock file keeps a concurrent stage with the same inputs out: that one trains
    in a directory of its own, not resumable. No lock on a URI (s3://...)."""
    current = Slot(storage, task, inputs)
    if "://" in storage:
        current.find_interrupted()
        yield current
        return
    lock_path = Path(current.root) / f".{current.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            own = f"{current.name}-{os.getpid()}"
            print(f"another train stage with the same inputs holds {current.name}: training in {own}", flush=True)
            yield Slot(storage, task, inputs, name=own)
            return
        current.find_interrupted()
        yield current


def owner_tags() -> dict[str, str]:
    """Which process runs a training (read back by `fail_dead_runs`)."""
    import socket

    import psutil

    me = psutil.Process()
    return {"cvops.host": socket.gethostname(), "cvops.pid": str(me.pid), "cvops.pid_started": f"{me.create_time():.2f}"}


def fail_dead_runs(client: Any, experiment_id: str, task: str, keep: str | None = None) -> list[str]:
    """Mark FAILED the task's train runs still RUNNING whose process died on this host (killed,
    out of memory, a lost node): MLflow never hears of a SIGKILL. `keep` is the run being
    resumed. A run of another host is left alone: its process cannot be checked from here.
    Returns the runs marked."""
    import socket

    import psutil

    runs = client.search_runs([experiment_id], f"tags.`cvops.task` = '{task}' and tags.`cvops.stage` = 'train' "
                                               "and attributes.status = 'RUNNING'")
    failed = []
    for run in runs:
        tags = run.data.tags
        if run.info.run_id == keep or tags.get("cvops.host") != socket.gethostname() or "cvops.pid" not in tags:
            continue
        try:  # the same pid, started at the same time: the same process, still alive
            alive = f"{psutil.Process(int(tags['cvops.pid'])).create_time():.2f}" == tags.get("cvops.pid_started")
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            client.set_tag(run.info.run_id, "cvops.failure", f"process {tags['cvops.pid']} died before the run ended "
                                                             "(marked by the next train stage)")
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed
