"""Two pipelines finish at once: two processes run the promote stage on one SQLite registry.

Both read "no champion" and pass the cold-start gate; without compare-and-set both would
become champion. The gate asks for a strict improvement over the champion and both
candidates are the same model, so exactly one may win: the other must notice the champion
moved, re-run its gate against the winner and be rejected, and the audit trail must hold
every move, numbered without gaps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from components.registry.audit import alias_version, history, registry_lock
from components.tasks import TASKS
from tests.conftest import stage_env
from tests.registry_helpers import log_candidate, make_registry_workspace, set_gate, write_candidate

# imports everything and opens the store first, says it is ready, then waits for the go
RACER = """
import sys, time, pathlib
from components.stages import promote
from components.runtime import tracking
from components.config import load_params
import components.stages.evaluate, mlflow.pyfunc
tracking.setup(load_params())  # open the store now: both racers read @champion right after the go
pathlib.Path(sys.argv[1]).touch()
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.005)
promote.run(load_params(), sys.argv[3])
"""


@pytest.mark.parametrize("task", list(TASKS))
def test_two_simultaneous_promotions_make_one_champion(task, tmp_path, monkeypatch):
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    monitor = TASKS[task].monitor
    set_gate(ws, task, {"cold_start": "promote", "thresholds": [{"metric": monitor, "min": 0.0}],
                        "changes": [{"metric": monitor, "direction": "higher", "min_delta": 0.01}]})
    same = log_candidate(ws, task, seed=0)
    twin = log_candidate(ws, task, seed=0, metrics=same.metrics)

    pipelines = []
    for label, candidate in (("a", same), ("b", twin)):
        other = tmp_path / label  # a second checkout of the project: own reports/, same data and store
        other.mkdir()
        shutil.copy(ws / "params.yaml", other / "params.yaml")
        os.symlink(ws / "data", other / "data")
        write_candidate(other, task, candidate)
        pipelines.append(other)

    env = {**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlruns.db'}"}
    go = tmp_path / "go"
    logs = [(tmp_path / f"{p.name}.log").open("w") for p in pipelines]  # files: a full pipe would stall a racer
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / f"ready-{p.name}"), str(go), task],
                              cwd=p, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
             for p, log in zip(pipelines, logs, strict=True)]
    try:
        deadline = time.monotonic() + 600  # two torch+mlflow imports on a busy machine
        while not all((tmp_path / f"ready-{p.name}").exists() for p in pipelines):
            assert all(proc.poll() is None for proc in procs), "a racer exited before the start"
            assert time.monotonic() < deadline, "racers did not start"
            time.sleep(0.05)
        # both racers read "no champion", then queue on the registry lock the test holds
        with registry_lock(env["MLFLOW_TRACKING_URI"]):
            go.touch()
            time.sleep(5)
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"{p.name}.log").read_text() for p in pipelines]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(outputs)

    verdicts = [json.loads((p / "reports" / task / "gate.json").read_text()) for p in pipelines]
    winner = next(v for v in verdicts if v["passed"])
    loser = next(v for v in verdicts if not v["passed"])
    client, name = MlflowClient(env["MLFLOW_TRACKING_URI"]), f"cvops-{task}"
    assert alias_version(client, name, "champion") == winner["version"]
    # the loser's gate ran again, against the winner
    assert loser["baseline_version"] == winner["version"] and loser["champion"] == winner["version"]
    assert "re-running the gate" in outputs[verdicts.index(loser)]

    entries = history(client, name)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [(e["alias"], e["to"]) for e in entries if e["alias"] == "champion"] == [("champion", winner["version"])]
    assert sorted(e["to"] for e in entries if e["alias"] == "challenger") == sorted([winner["version"], loser["version"]])
