"""No credentials leak: fake tokens planted in the git remote, the Ray address, the tracking URI
and the environment are searched for in every output surface (registry tags and description,
the run's model card artifact, `cvops lineage` / `history` / `submit` output, the Prefect
artifact's links, streamed stage logs) and in the `ray job submit` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.cli import main
from components.registry.record import read_record
from components.runtime import submit
from components.runtime.redact import redact
from tests.conftest import ROOT, git
from tests.registry_helpers import log_candidate, promote_candidate
from tests.test_lineage import MODEL, TASK, repo  # noqa: F401  (the fixture)

GIT_TOKEN, RAY_PASS, MLFLOW_PASS, AWS_SECRET = "ghp_FAKEgit0TOKEN", "FAKEray0PASS", "FAKEmlflow0PASS", "FAKEaws0SECRET"
PLANTED = (GIT_TOKEN, RAY_PASS, MLFLOW_PASS, AWS_SECRET)


def leaks(text: str) -> list[str]:
    return [token for token in PLANTED if token in text]


@pytest.mark.parametrize(("text", "expected"), [
    (f"git clone https://user:{GIT_TOKEN}@git.example.com/r.git x", "git clone https://user:***@git.example.com/r.git x"),
    (f"https://{GIT_TOKEN}@github.com/o/r", "https://***@github.com/o/r"),
    ("ssh://git@host/r.git and git@host:o/r.git", "ssh://git@host/r.git and git@host:o/r.git"),
    (f"key={AWS_SECRET};", "key=***;"),
    ("epochs 10, true, http://127.0.0.1:5000", "epochs 10, true, http://127.0.0.1:5000"),
])
def test_redact_masks_url_userinfo_and_secret_values(text, expected, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "true")  # too short to be a secret: never masks words
    assert redact(text) == expected
    assert redact({"k": [text]}) == {"k": [expected]}


def test_no_planted_token_reaches_the_registry_cards_or_the_cli(repo, capsys, monkeypatch):  # noqa: F811
    git(repo, "remote", "set-url", "origin", f"https://user:{GIT_TOKEN}@git.example.com/team/cvops.git")
    monkeypatch.setenv("RAY_ADDRESS", f"ray://admin:{RAY_PASS}@head.example:10001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    candidate = log_candidate(repo, TASK, seed=0)
    promote_candidate(repo, TASK, candidate)
    monkeypatch.delenv("RAY_ADDRESS")

    client = MlflowClient(f"sqlite:///{repo / 'mlruns.db'}")
    version = client.get_model_version(MODEL, "1")
    record = read_record(client, version)
    assert record["cvops.git_remote"] == "https://user:***@git.example.com/team/cvops.git"
    assert not leaks(json.dumps(record)) and not leaks(version.description or "")
    card = Path(client.download_artifacts(candidate.run_id, "model_card/v1.md", str(repo)))
    assert not leaks(card.read_text())
    for argv in (["lineage", TASK], ["lineage", f"models:/{MODEL}@champion", "--json"], ["history", TASK]):
        assert main(argv) == 0
    out = capsys.readouterr()
    assert "https://user:***@git.example.com/team/cvops.git" in out.out
    assert not leaks(out.out + out.err)


def test_submit_passes_credentials_in_a_private_file_never_in_argv(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:{MLFLOW_PASS}@mlflow.example:5000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    cmd = submit.command("train", TASK, "http://127.0.0.1:8265", "/private/runtime_env.yaml")
    assert not leaks(" ".join(cmd)) and "--runtime-env-json" not in cmd
    assert submit.runtime_env()["env_vars"]["AWS_SECRET_ACCESS_KEY"] == AWS_SECRET  # the job still gets it
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())  # submit validates them first
    assert main(["submit", "train", "--task", TASK, "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "http://bob:***@mlflow.example:5000" in out.out and not leaks(out.out + out.err)


def test_stage_logs_and_prefect_links_are_redacted(monkeypatch, tmp_path):
    from flows import dvc_runner, pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:{MLFLOW_PASS}@mlflow.example:5000")
    assert not leaks(pipeline._mlflow_links("r1", MODEL, "1"))
    records: list[str] = []
    logger = logging.getLogger("test-redact")
    logger.setLevel(logging.INFO)
    logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
    (tmp_path / "dvc.yaml").write_text(f"stages:\n  s:\n    cmd: echo $MLFLOW_TRACKING_URI {GIT_TOKEN}\n")
    git(tmp_path, "init", "-q")
    monkeypatch.setenv("GIT_PUSH_TOKEN", GIT_TOKEN)
    from dvc.repo import Repo

    dvc_log = logging.getLogger("dvc")  # a handler DVC bound to an earlier test's captured (now closed) stderr
    for handler in [h for h in dvc_log.handlers if getattr(getattr(h, "stream", None), "closed", False)]:
        dvc_log.removeHandler(handler)
    Repo.init(str(tmp_path))
    dvc_runner.reproduce(tmp_path, "s", logger)
    assert any("bob:***@mlflow.example" in r for r in records), records
    assert not leaks("\n".join(records))
