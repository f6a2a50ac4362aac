"""Nothing is left behind: an experiment leaves the workspace as committed, subprocesses find
the project's tools without an activated environment. A two-line DVC pipeline (real DVC, real
git) stands in for the ML one: what is checked is where DVC writes, not what the stage does."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import yaml

from flows import dvc_runner
from tests.conftest import BIN, dvc, git, git_init

PARAMS = "train:\n  epochs: 2   # a comment DVC must not strip\n"
STAGE = {"stages": {"train": {
    "cmd": "cvops --help > /dev/null && python -c \"import yaml; e = yaml.safe_load(open('params.yaml'))['train']['epochs']; "
           "open('out.txt', 'w').write(str(e)); open('metrics.json', 'w').write('{\\\"epochs\\\": %d}' % e)\"",
    "params": ["train.epochs"], "outs": ["out.txt"], "metrics": [{"metrics.json": {"cache": False}}]}}}


def _workspace(path: Path) -> Path:
    path.mkdir()
    (path / "params.yaml").write_text(PARAMS)
    (path / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    git_init(path)
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    return path


def test_experiment_leaves_the_workspace_as_committed(tmp_path, monkeypatch):
    # no activated environment: `cvops` and `python` must come from the interpreter's bin/
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    ws = _workspace(tmp_path / "ws")
    logger = logging.getLogger("test-exp")
    assert dvc_runner.reproduce(ws, "train", logger)
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "baseline")
    before = {name: (ws / name).read_bytes() for name in ("params.yaml", "dvc.lock", "out.txt", "metrics.json")}

    name, rev = dvc_runner.run_experiment(ws, ["train"], {"train.epochs": "6"}, "six", logger)

    assert name == "six"
    assert {n: (ws / n).read_bytes() for n in before} == before, "the experiment rewrote the workspace"
    assert git(ws, "status", "--porcelain") == ""
    assert '"epochs": 6' in dvc_runner.show_file(ws, rev, "metrics.json")
    assert not dvc_runner.reproduce(ws, "train", logger), "a plain run after it found nothing changed"
    assert (ws / "out.txt").read_text() == "2", "a plain run uses the committed params"
    assert "six" in dvc(ws, "exp", "show", "--no-pager").stdout
    dvc(ws, "exp", "apply", "six")
    assert (ws / "out.txt").read_text() == "6" and "epochs: 6" in (ws / "params.yaml").read_text()


def test_subprocess_path_puts_the_interpreters_bin_first():
    from components.runtime.tools import with_tools

    env = with_tools({"PATH": f"/usr/bin{os.pathsep}{BIN}"})
    assert env["PATH"].split(os.pathsep) == [str(BIN), "/usr/bin"]
    found = subprocess.run(["sh", "-c", "command -v cvops"], env=env, capture_output=True, text=True).stdout
    assert found.strip() == str(BIN / "cvops")


def test_a_train_run_whose_process_died_is_marked_failed(tmp_path):
    from mlflow import MlflowClient

    from components.training import resume

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.create_experiment("cvops", artifact_location=(tmp_path / "artifacts").as_uri())
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs, as after a SIGKILL
    runs = {}
    for name, tags in {"dead": {**resume.owner_tags(), "cvops.pid": str(dead.pid)},
                       "alive": resume.owner_tags(),                                   # this process
                       "resumed": {**resume.owner_tags(), "cvops.pid": str(dead.pid)},  # being resumed: kept
                       "other-host": {**resume.owner_tags(), "cvops.host": "elsewhere", "cvops.pid": str(dead.pid)},
                       "other-task": {**resume.owner_tags(), "cvops.task": "detection", "cvops.pid": str(dead.pid)}}.items():
        run = client.create_run(experiment, tags={"cvops.task": "classification", "cvops.stage": "train", **tags},
                                run_name=name)
        runs[name] = run.info.run_id

    failed = resume.fail_dead_runs(client, experiment, "classification", keep=runs["resumed"])

    assert failed == [runs["dead"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"dead": "FAILED", "alive": "RUNNING", "resumed": "RUNNING", "other-host": "RUNNING",
                      "other-task": "RUNNING"}
    assert "died" in client.get_run(runs["dead"]).data.tags["cvops.failure"]


def test_detection_map_logs_no_coco_summary(caplog):
    import torch

    from components.tasks.detectors import DetectionMAP

    metric = DetectionMAP(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="faster_coco_eval")
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    metric.update([{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}],
                  [{"boxes": box, "labels": torch.tensor([1])}])
    with caplog.at_level(logging.INFO):
        assert float(metric.compute()["map"]) == 1.0
    assert not [r for r in caplog.records if "Average Precision" in r.getMessage()]


def test_loading_the_pyfunc_warns_nothing_a_user_can_act_on():
    import importlib
    import warnings

    import components.serving.pyfunc as pyfunc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(pyfunc)  # what MLflow does at every load and registration (models-from-code)
    assert not [w for w in caught if "type hints" in str(w.message)], [str(w.message) for w in caught]
