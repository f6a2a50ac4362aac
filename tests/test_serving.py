"""`mlflow models serve -m models:/cvops-<task>@champion` on loopback answers a posted image
with the same predictions as the pyfunc loaded in process."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import mlflow
import pandas as pd
import pytest

from components.tasks import TASKS
from tests.conftest import BIN, stage_env
from tests.registry_helpers import (
    log_candidate,
    make_registry_workspace,
    promote_candidate,
    set_gate,
    split_images,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@pytest.fixture(params=list(TASKS))
def served_champion(request, tmp_path, monkeypatch) -> Iterator[tuple[str, str, list]]:
    """(task, URL of the server, images) with the task's champion served on loopback; the
    server's process group is always stopped."""
    task = request.param
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    set_gate(ws, task, {"cold_start": "promote", "thresholds": [{"metric": TASKS[task].monitor, "min": 0.0}]})
    promote_candidate(ws, task, log_candidate(ws, task, seed=0))
    port = free_port()
    env = {**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlruns.db'}"}
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/cvops-{task}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", proc)
        yield task, f"http://127.0.0.1:{port}", split_images(ws, task, 2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's workers are in its own group
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_served_champion_predicts_posted_images(served_champion):
    task, url, images = served_champion
    payload = {"dataframe_split": {"columns": ["image"],
                                   "data": [[base64.b64encode(p.read_bytes()).decode()] for p in images]}}
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        served = json.loads(response.read())["predictions"]

    local = mlflow.pyfunc.load_model(f"models:/cvops-{task}@champion")
    expected = local.predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))
    assert len(served) == len(images) == len(expected)
    for got, want in zip(served, expected, strict=True):
        assert_close(got, json.loads(json.dumps(want)))


def assert_close(got, want, where: str = "prediction") -> None:
    """Same structure, same strings, numbers within float32 noise (boxes, scores, masks)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-4), where
    else:
        assert got == want, where
