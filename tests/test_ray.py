"""Ray at full strength, for real: a two-node cluster on this machine, a worker killed
mid-run, a killed train stage rerun, a stage submitted as a Ray Job, and the tune stage
(ASHA + Optuna, nested MLflow runs) feeding train. All on one prepared tiny workspace; each
test runs `cvops ...` as DVC (or a person) would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from components.runtime import ray_cluster
from tests.conftest import BIN, make_workspace, stage_env, tiny_params
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


def _stop(temp_dir: Path, gcs_port: str) -> None:
    """Kill the processes of *this* cluster only: those whose command lines name its temp dir
    or its GCS port (the Ray Client server names neither the temp dir nor a parent), and their
    children (the dashboard's module processes). `ray stop` would kill every Ray cluster on the host."""
    me = {psutil.Process().pid, *(parent.pid for parent in psutil.Process().parents())}
    mine = set()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or []) + " "
        if process.pid not in me and (str(temp_dir) in cmdline or f":{gcs_port} " in cmdline):
            mine.add(process)
            with contextlib.suppress(psutil.Error):
                mine.update(process.children(recursive=True))
    ray_cluster.stop_processes(mine, timeout=15)
    shutil.rmtree(temp_dir, ignore_errors=True)  # the cluster's session logs and sockets


def _ray_start(*args: str, temp_dir: Path) -> None:
    env = {**stage_env(), "RAY_AUTH_MODE": "token"}
    started = subprocess.run([str(BIN / "ray"), "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                              f"--temp-dir={temp_dir}"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[str]:
    """`ray start --head` plus `ray start --address`, one CPU each, on this machine (one per
    module: the training and the data-stage tests share it)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths are length-limited
    port = str(_free_port())
    try:
        _ray_start("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                   f"--ray-client-server-port={_free_port()}", temp_dir=temp_dir)
        _ray_start(f"--address=127.0.0.1:{port}", "--num-cpus=1", temp_dir=temp_dir)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(temp_dir, port)


@pytest.fixture
def job_server() -> Iterator[tuple[str, Path]]:
    """A Ray head with its dashboard, i.e. the Ray Jobs server, on 127.0.0.1 (free ports:
    other clusters may run on this host), token auth on: (job server URL, temp dir)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    port, dashboard = str(_free_port()), _free_port()
    try:
        _ray_start("--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                   *(f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                             "ray-client-server-port", "metrics-export-port",
                                                             "runtime-env-agent-port")),
                   temp_dir=temp_dir)
        yield f"http://127.0.0.1:{dashboard}", temp_dir
    finally:
        _stop(temp_dir, port)


def test_two_workers_train_on_two_nodes(workspace, two_node_cluster, tmp_path):
    ws = workspace
    set_param(ws, "ray.num_workers", 2)
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


MANIFEST_LINE = re.compile(r"manifest by Ray Data on (\d+) node\(s\): (\{.*\})")


def test_data_stage_ray_data_work_lands_on_both_nodes(two_node_cluster, tmp_path):
    """prepare with `data.storage: shards` on the two-node cluster: the manifest's Ray Data
    tasks (decode, hashes, header checks per image) ran on both nodes, every image counted once."""
    def sharded(params: dict) -> dict:
        params = tiny_params(params)
        params["tasks"][TASK]["data"].update(storage="shards", shard_size_mb=0.02)
        return params

    ws = make_workspace(tmp_path / "ws", sharded)
    env = {**stage_env(), "RAY_ADDRESS": two_node_cluster, "RAY_AUTH_MODE": "token"}
    text = (lambda r: r.stdout + r.stderr)(cvops(ws, "stage", "prepare", "--task", TASK, env=env))
    found = MANIFEST_LINE.search(text)
    assert found, text[-3000:]
    images_per_node = json.loads(found[2].replace("'", '"'))
    assert int(found[1]) == 2 and all(n > 0 for n in images_per_node.values()), f"not spread over the 2 nodes: {found[0]}"
    assert sum(images_per_node.values()) == 90


@pytest.mark.slow  # ~75 s on CI (2 cores): a training killed and resumed; the resume logic stays in tests/test_resume.py
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
    steps = {m.step for m in client_for(ws).get_metric_history(run_id, "val/accuracy")}
    assert steps == set(range(epochs)), f"epochs logged: {sorted(steps)}"


def _wait_for(find, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while (found := find()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


@pytest.mark.slow  # two train stages of 8 epochs (~80 s); the default suite keeps the killed-worker resume
def test_killed_train_stage_rerun_resumes_from_its_checkpoint(workspace):
    """The stage's driver is killed after a checkpoint; rerun with the same params, data and
    code, it continues from that checkpoint (no epoch 1 again) in the same MLflow run, and
    the finished run's directory is moved aside (a later rerun starts fresh). One worker: the
    world-size-1 path (no DDP wrapper), which the other tests' two workers do not take."""
    ws, epochs = workspace, 8
    set_param(ws, "ray.max_failures", 0)
    set_param(ws, "ray.num_workers", 1)
    set_param(ws, f"tasks.{TASK}.train.epochs", epochs)
    process = subprocess.Popen([str(BIN / "cvops"), "stage", "train", "--task", TASK], cwd=ws, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, snapshot = [], None
    slot_snapshots = f"ray_results/{TASK}-{'[0-9a-f]' * 12}/checkpoint_manager_snapshot.json"  # not finished runs
    try:
        for line in process.stdout:
            lines.append(line)
            if f"epoch 2/{epochs}" in line:  # a checkpoint is reported; wait until Train recorded it
                snapshot = _wait_for(lambda: next(ws.glob(slot_snapshots), None))
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
        time.sleep(5)  # the local cluster ends with its driver; whatever is left, in its session:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert snapshot is not None, "".join(lines)[-4000:]
    slot = snapshot.parent
    killed_run = json.loads((slot / "cvops_run.json").read_text())["mlflow_run_id"]

    text = (lambda r: r.stdout + r.stderr)(cvops(ws, "stage", "train", "--task", TASK))
    assert f"resuming the interrupted training {slot.name}" in text and "resuming from the last checkpoint" in text, text[-4000:]
    ran = [int(epoch) for epoch in re.findall(rf"epoch (\d+)/{epochs}", text)]
    assert ran and min(ran) > 1 and ran == list(range(min(ran), epochs + 1)), f"epochs of the rerun: {ran}"
    run_id = json.loads((ws / "reports" / TASK / "train_run.json").read_text())["run_id"]
    assert run_id == killed_run, "the rerun logged to a new MLflow run"
    client = client_for(ws)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.tags["cvops.resumed_from_run"] == killed_run, "the run says what it resumed"
    assert {m.step for m in client.get_metric_history(run_id, "val/accuracy")} == set(range(epochs))
    assert not slot.exists() and (ws / "ray_results" / f"{TASK}-{run_id[:8]}" / "cvops_run.json").is_file()


@pytest.mark.slow  # ~60 s on CI (2 cores): a Ray Jobs head and a train stage submitted to it
def test_submit_runs_the_train_stage_as_a_ray_job(workspace, job_server):
    """`cvops submit`: the workspace (with DVC's gitignored data) is uploaded as the job's working
    directory, the stage's Ray Train run joins the job's cluster, the job logs to the MLflow
    store the submitter names; token auth on all the way."""
    ws, (address, _) = workspace, job_server
    set_param(ws, "ray.max_failures", 0)
    set_param(ws, "ray.num_workers", 2)
    set_param(ws, f"tasks.{TASK}.train.epochs", 2)
    store = f"sqlite:///{ws / 'mlruns.db'}"
    client = client_for(ws)
    if client.get_experiment_by_name(f"cvops/{TASK}") is None:  # artifacts in the workspace, not in the job's directory
        client.create_experiment(f"cvops/{TASK}", artifact_location=(ws / "mlartifacts").as_uri())
    (ws / "data" / ".gitignore").write_text(f"/{TASK}\n")  # what `dvc repro` writes for the prepare stage's output
    try:
        output = cvops(ws, "submit", "train", "--task", TASK, "--address", address,
                       env={**stage_env(), "MLFLOW_TRACKING_URI": store})
    finally:
        (ws / "data" / ".gitignore").unlink()
    text = output.stdout + output.stderr
    job_id = re.search(r"--submission-id (\S+)", text)[1]
    status = subprocess.run([str(BIN / "ray"), "job", "status", job_id, "--address", address], capture_output=True,
                            text=True, env={**stage_env(), "RAY_AUTH_MODE": "token"}, timeout=120)  # the token is required
    assert status.returncode == 0 and f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
    workers = WORKER_LINE.findall(text)
    assert len(workers) == 2 and all("/runtime_resources/working_dir_files/" in data for *_, data in workers), text[-4000:]
    job_dir = Path(workers[0][3]).parents[1]  # <job working dir>/data/<task>
    assert (job_dir / "models" / TASK / "model.pt").stat().st_size > 0
    run_info = json.loads((job_dir / "reports" / TASK / "train_run.json").read_text())
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["cvops.stage"] == "train"
    model = client.get_logged_model(run_info["model_uri"].removeprefix("models:/"))
    assert (Path(model.artifact_location.removeprefix("file://")) / "MLmodel").is_file()


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
    experiment = client.get_experiment_by_name(f"cvops/{TASK}").experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{tuned['run_id']}'")
    assert len(children) == trials
    for child in children:
        assert "train.lr" in child.data.params
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert len(history) == int(child.data.tags["cvops.epochs"]) >= 1
    assert sum(c.data.tags["cvops.stopped_early"] == "true" for c in children) == tuned["stopped_early"]

    cvops(ws, "stage", "train", "--task", TASK)
    run_id = json.loads((ws / "reports" / TASK / "train_run.json").read_text())["run_id"]
    train_run = client.get_run(run_id)
    assert float(train_run.data.params["train.lr"]) == pytest.approx(tuned["best_config"]["train.lr"])
    assert train_run.data.tags["cvops.tuned_by"] == tuned["run_id"]


LISTENERS = """
import json, psutil, ray
from components.config import load_params
from components.runtime import ray_cluster
ray_cluster.connect(load_params())
ray.get(ray.remote(lambda: 0).remote())  # a worker process (it listens too)
me = psutil.Process()
found = sorted({(p.name(), c.laddr.ip) for p in me.children(recursive=True) + [me]
                for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN})
print(json.dumps(found))
ray_cluster.shutdown()
"""


def test_local_cluster_listens_on_loopback_only(workspace):
    """Every listening socket of the stage's local cluster (GCS, raylet, workers, agents, metrics)."""
    result = subprocess.run([str(BIN / "python"), "-c", LISTENERS], cwd=workspace, env=stage_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    listeners = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(listeners) >= 5, listeners  # GCS, raylet, a worker, the agents: all seen
    exposed = [(name, ip) for name, ip in listeners if ip.removeprefix("::ffff:") != "127.0.0.1"]
    assert not exposed, f"listening beyond loopback: {exposed}"


@pytest.mark.slow  # one train stage started and stopped (~1-2 min on 2 cores)
def test_terminated_train_stage_leaves_no_ray_process_behind(workspace):
    """SIGTERM (a Prefect cancel, a container stop) mid-training: the stage's local cluster
    (GCS, raylet, agents, workers) goes with it."""
    set_param(workspace, "ray.num_workers", 1)
    set_param(workspace, f"tasks.{TASK}.train.epochs", 50)
    process = subprocess.Popen([str(BIN / "cvops"), "stage", "train", "--task", TASK], cwd=workspace, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    cluster: list[psutil.Process] = []
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "epoch 1/50" in line:
                cluster = psutil.Process(process.pid).children(recursive=True)
                process.terminate()
                break
        process.wait(timeout=120)
        assert len(cluster) >= 3, "".join(lines)[-3000:]  # gcs_server, raylet, a worker at least
        _, alive = psutil.wait_procs(cluster, timeout=20)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    finally:  # the test's own cleanup, after the check
        process.kill()
        for leftover in cluster:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
