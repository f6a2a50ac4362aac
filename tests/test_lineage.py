"""`cvops lineage` on a real MLflow registry (SQLite) and a real git + DVC workspace: what the
promote stage records, what the command prints, and its errors. Candidates are untrained
models (no training, see registry_helpers); rebuilding a trained champion from these
records in a fresh clone is tests/test_reproduce.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from components.cli import main
from tests.conftest import ROOT, git
from tests.registry_helpers import log_candidate, make_registry_workspace, promote_candidate

TASK = "classification"
MODEL = f"cvops-{TASK}"


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A registry workspace that is also a committed git + DVC repository with a remote."""
    ws = make_registry_workspace(tmp_path, TASK, monkeypatch)
    (ws / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc" / "config", ws / ".dvc" / "config")
    shutil.copy2(ROOT / "dvc.yaml", ws / "dvc.yaml")
    (ws / ".gitignore").write_text((ROOT / ".gitignore").read_text() + "/candidates/\n/data/\n")
    git(ws, "init", "-q")
    git(ws, "config", "user.email", "tests@cvops.local")
    git(ws, "config", "user.name", "cvops tests")
    git(ws, "remote", "add", "origin", "https://git.example.com/team/cvops.git")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "workspace")
    return ws


def lineage_json(capsys, uri: str) -> dict:
    capsys.readouterr()
    assert main(["lineage", uri, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lineage_of_a_promoted_version_names_commit_params_runs_and_commands(repo, capsys):
    candidate = log_candidate(repo, TASK, seed=0)
    promote_candidate(repo, TASK, candidate)
    lineage = lineage_json(capsys, f"models:/{MODEL}@champion")

    head = git(repo, "rev-parse", "HEAD").strip()
    assert (lineage["name"], lineage["version"], lineage["task"]) == (MODEL, "1", TASK)
    assert lineage["git"]["commit"] == head and lineage["git"]["dirty"] is False, lineage["git"]
    assert lineage["git"]["remote"] == "https://git.example.com/team/cvops.git"
    assert lineage["mlflow"]["run_id"] == candidate.run_id
    assert lineage["dvc"]["remote"] == str((repo / ".dvc-storage").resolve())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    values = lineage["params"]["values"]
    assert values["seed"] == params["seed"] and values["ray.num_workers"] == params["ray"]["num_workers"]
    assert values[f"tasks.{TASK}.train"]["epochs"] == params["tasks"][TASK]["train"]["epochs"]
    for section in ("data", "contract", "tune", "model", "train", "evaluate", "gate"):  # every stage's params
        assert f"tasks.{TASK}.{section}" in values
    assert {"ray.precision", "ray.use_gpu", "ray.cpus_per_worker"} <= set(values)
    assert {"torch", "mlflow", "dvc", "python"} <= set(lineage["packages"])
    commands = lineage["reproduce"]["commands"]
    assert commands[0] == "git clone https://git.example.com/team/cvops.git cvops-repro && cd cvops-repro"
    assert f"git checkout {head}" in commands and "make install" in commands
    assert f"dvc repro --force evaluate@{TASK}" in commands

    capsys.readouterr()
    assert main(["lineage", f"models:/{MODEL}/1"]) == 0
    text = capsys.readouterr().out
    for expected in (head, "(clean)", candidate.run_id, f"tasks.{TASK}.train:", "Reproduce from scratch",
                     f"dvc repro --force evaluate@{TASK}", "torch 2."):
        assert expected in text, f"{expected!r} missing from:\n{text}"


def test_uncommitted_inputs_mark_the_version_dirty_but_pipeline_outputs_do_not(repo, capsys):
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what dvc repro writes: not an input
    promote_candidate(repo, TASK, log_candidate(repo, TASK, seed=0))
    assert lineage_json(capsys, f"models:/{MODEL}/1")["git"]["dirty"] is False

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"][TASK]["train"]["lr"] = 0.01
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "components").mkdir()
    (repo / "components" / "new_model.py").write_text("# not committed\n")
    promote_candidate(repo, TASK, log_candidate(repo, TASK, seed=1))
    lineage = lineage_json(capsys, f"models:/{MODEL}/2")
    assert lineage["git"]["dirty"] is True
    assert sorted(lineage["git"]["dirty_files"]) == ["components/new_model.py", "params.yaml"]
    assert lineage["params"]["values"][f"tasks.{TASK}.train"]["lr"] == 0.01  # the params it really used
    assert any("differed from the commit" in note for note in lineage["reproduce"]["notes"])


def test_unknown_model_alias_version_or_uri_is_an_error_that_names_what_exists(repo, capsys):
    promote_candidate(repo, TASK, log_candidate(repo, TASK, seed=0))
    capsys.readouterr()
    cases = {
        f"models:/{MODEL}@best": ["no alias @best", "@champion -> v1", "versions: 1", f"cvops history {TASK}"],
        f"models:/{MODEL}/7": ["no version 7", "versions: 1"],
        "models:/cvops-nothing@champion": ["no registered model 'cvops-nothing'", f"registered models: {MODEL}",
                                           "MLFLOW_TRACKING_URI"],
        f"{MODEL}@champion": ["not a model URI", "models:/<name>@<alias>"],
    }
    for uri, expected in cases.items():
        assert main(["lineage", uri]) == 2, uri
        err = capsys.readouterr().err
        assert all(e in err for e in expected), f"{uri}: {err}"


def test_lineage_before_anything_is_registered_says_to_run_the_pipeline(repo, capsys):
    assert main(["lineage", TASK]) == 2  # a task name means its @champion
    assert "no model is registered yet: run the pipeline (cvops run)" in capsys.readouterr().err
