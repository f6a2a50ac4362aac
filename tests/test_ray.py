"""Ray at full strength, for real: a two-node cluster on this machine, a worker killed
mid-run, and the tune stage (ASHA + Optuna, nested MLflow runs) feeding train.
All on one prepared tiny workspace; each test runs `cvops stage ...` as DVC would."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import BIN, make_workspace, stage_env
from tests.test_pipeline import client_for, set_param

TASK = "classification"
WORKER_LINE = re.compile(r"worker (\d)/(\d) on node ([0-9a-f]+) pid \d+ data (\S+)")


def cvops(ws: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "cvops"), *args], cwd=ws, capture_output=True, text=True,
                            env=env or stage_env(), timeout=900)
    assert result.returncode == 0, f"cvops {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("ray") / "ws")
    cvops(ws, "stage", "prepare", "--task", TASK)
    return ws


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(temp_dir: Path) -> None:
    """Kill the processes of *this* cluster only (their command lines name its temp dir);
    `ray stop` would kill every Ray cluster on the host."""
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])]
    for process in mine:
        process.terminate()
    _, alive = psutil.wait_procs(mine, timeout=15)
    for process in alive:
        process.kill()


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    """`ray start --head` plus `ray start --address`, one CPU each, on this machine."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths are length-limited
    address = f"127.0.0.1:{_free_port()}"
    env = {**stage_env(), "RAY_AUTH_MODE": "token"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    try:
        for args in (["--head", f"--port={address.split(':')[1]}", "--include-dashboard=false"],
                     [f"--address={address}"]):
            started = subprocess.run([str(BIN / "ray"), "start", *args, *common], env=env,
                                     capture_output=True, text=True, timeout=300)
            assert started.returncode == 0, started.stdout + started.stderr
        yield address
    finally:
        _stop(temp_dir)


def test_two_workers_train_on_two_nodes(workspace, two_node_cluster, tmp_path):
    ws = workspace
    set_param(ws, "ray.shared_data_dir", str(tmp_path / "shared"))  # what an NFS mount would be
    env = {**stage_env(), "RAY_ADDRESS": two_node_cluster, "RAY_AUTH_MODE": "token"}
    try:
        output = cvops(ws, "stage", "train", "--task", TASK, env=env)
    finally:
        set_param(ws, "ray.shared_data_dir", None)
    text = output.stdout + output.stderr
    workers = {int(rank): (node, data) for rank, _, node, data in WORKER_LINE.findall(text)}
    assert sorted(workers) == [0, 1], text[-3000:]
    assert workers[0][0] != workers[1][0], f"both workers on node {workers[0][0]}: not spread over the 2 nodes"
    assert all(Path(data).parent == tmp_path / "shared" for _, data in workers.values()), "read from the staged copy"
    assert "epoch 2/2" in text
    assert (ws / "models" / TASK / "model.pt").stat().st_size > 0


def test_killed_worker_run_resumes_from_last_checkpoint(workspace):
    ws, epochs = workspace, 5
    set_param(ws, "ray.max_failures", 1)
    set_param(ws, f"tasks.{TASK}.train.epochs", epochs)
    process = subprocess.Popen([str(BIN / "cvops"), "stage", "train", "--task", TASK], cwd=ws, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, killed = [], None
    for line in process.stdout:
        lines.append(line)
        found = re.search(rf"RayTrainWorker pid=(\d+)\).*epoch 2/{epochs}", line)
        if found and killed is None:
            killed = int(found[1])
            os.kill(killed, signal.SIGKILL)  # the rank-0 worker dies mid-run
    text = "".join(lines)
    assert process.wait(timeout=600) == 0, text[-4000:]
    assert killed is not None, "the run ended before a worker could be killed"
    assert "resuming from the last checkpoint" in text, text[-4000:]
    assert text.count(f"epoch 1/{epochs}") == 1, "the restarted workers began again from epoch 1"
    run_id = json.loads((ws / "reports" / TASK / "train_run.json").read_text())["run_id"]
    steps = {m.step for m in client_for(ws).get_metric_history(run_id, "val_accuracy")}
    assert steps == set(range(epochs)), f"epochs logged: {sorted(steps)}"


@pytest.mark.slow  # 4 trials x a TorchTrainer each: minutes on 2 cores (`make test-slow`)
def test_tune_stops_trials_early_logs_nested_runs_and_feeds_train(workspace):
    ws, trials = workspace, 4
    set_param(ws, f"tasks.{TASK}.train.epochs", 2)
    set_param(ws, f"tasks.{TASK}.tune", {
        "enabled": True, "metric": "train/loss", "mode": "min", "num_samples": trials,
        "max_concurrent_trials": 1, "epochs": 3, "grace_period": 1, "reduction_factor": 2,
        # a wide range: tiny learning rates barely move the loss, so ASHA has losers to stop
        "search_space": {"train.lr": {"type": "loguniform", "low": 1e-6, "high": 0.05}},
    })
    started = time.monotonic()
    cvops(ws, "stage", "tune", "--task", TASK)
    tuned = json.loads((ws / "reports" / TASK / "tune.json").read_text())
    assert tuned["tuned"] and tuned["trials"] == trials
    assert tuned["stopped_early"] >= 1, f"ASHA stopped no trial ({time.monotonic() - started:.0f}s): {tuned}"
    client = client_for(ws)
    experiment = client.get_experiment_by_name("cvops").experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{tuned['run_id']}'")
    assert len(children) == trials
    for child in children:
        assert "train.lr" in child.data.params
        history = client.get_metric_history(child.info.run_id, "train_loss")
        assert len(history) == int(child.data.tags["cvops.epochs"]) >= 1
    assert sum(c.data.tags["cvops.stopped_early"] == "true" for c in children) == tuned["stopped_early"]

    cvops(ws, "stage", "train", "--task", TASK)
    run_id = json.loads((ws / "reports" / TASK / "train_run.json").read_text())["run_id"]
    train_run = client.get_run(run_id)
    assert float(train_run.data.params["train.lr"]) == pytest.approx(tuned["best_config"]["train.lr"])
    assert train_run.data.tags["cvops.tuned_by"] == tuned["run_id"]
