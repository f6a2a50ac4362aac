"""Reproducible by anyone: a result published with git + a DVC remote is rebuilt in fresh
clones. One task (classification) on tiny data with a shrunk evaluation, in real git
repositories (a bare `origin`), a real local DVC remote, real Ray training and a SQLite
MLflow registry per clone.

The author's clone runs the pipeline, commits dvc.lock and the reports, `dvc push`es and
`git push`es. Then: a fresh clone pulls and `dvc repro` reruns nothing; `cvops lineage`
names the commit, hashes and commands; and (slow) its commands, run in another fresh clone,
retrain from scratch to the champion's exact metrics and weights."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from components.paths import STAGES
from tests.conftest import BIN, dvc, git, make_workspace, stage_env, tiny_params
from tests.test_pipeline import ran_stages

pytestmark = pytest.mark.timeout(1800)

TASK = "classification"
SKIPPED = ("make install", "source .venv/bin/activate")  # this test run's environment is that install


def one_task(params: dict) -> dict:
    """tiny_params for one task, with an evaluation suite cut to seconds (same code paths)."""
    params = tiny_params(params)
    params["pipeline"]["tasks"] = [TASK]
    params["tasks"][TASK]["evaluate"].update({
        "corruptions": {"gaussian_noise": [0.02, 0.04, 0.06, 0.09, 0.12], "rotate": [4, 8, 12, 18, 25]},
        "eps": [0.02], "pgd_steps": 2, "bootstrap_samples": 20, "robustness_images": 16, "explain_samples": 2,
    })
    return params


def clone(origin: Path, target: Path) -> Path:
    git(target.parent, "clone", "-q", str(origin), target.name)
    git(target, "config", "user.email", "tests@cvops.local")
    git(target, "config", "user.name", "cvops tests")
    return target


def lock_hash(ws: Path, stage: str, out: str) -> str:
    outs = yaml.safe_load((ws / "dvc.lock").read_text())["stages"][stage]["outs"]
    return next(o["md5"] for o in outs if o["path"] == out)


def shell(cwd: Path, commands: list[str]) -> subprocess.CompletedProcess:
    """Run commands as a person would paste them (one bash, stop at the first failure)."""
    script = "set -euo pipefail\n" + "\n".join(c for c in commands if c not in SKIPPED)
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=stage_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Path]:
    """origin.git with the author's results committed and their data and model in a DVC remote."""
    base = tmp_path_factory.mktemp("reproduce")
    origin, remote = base / "origin.git", base / "dvc-remote"
    git(base, "clone", "-q", "--bare", str(make_workspace(base / "template", edit=one_task)), origin.name)
    author = clone(origin, base / "author")
    dvc(author, "remote", "add", "-d", "team", str(remote))  # a remote every clone reaches
    git(author, "commit", "-qam", "DVC remote for the team")
    result = dvc(author, "repro")
    assert ran_stages(result.stdout) == [f"{s}@{TASK}" for s in STAGES], result.stdout
    git(author, "add", "-A")
    git(author, "commit", "-qm", "results: dvc.lock and reports")
    dvc(author, "push")
    git(author, "push", "-q", "origin", "HEAD")
    return {"base": base, "origin": origin, "author": author}


def test_a_fresh_clone_pulls_the_results_and_reruns_no_stage(published):
    author, fresh = published["author"], clone(published["origin"], published["base"] / "fresh")
    dvc(fresh, "pull")
    result = dvc(fresh, "repro")
    assert ran_stages(result.stdout) == [], result.stdout
    assert result.stdout.count("didn't change, skipping") == len(STAGES)
    for path in (f"reports/{TASK}/metrics.json", f"models/{TASK}/model.pt", f"data/{TASK}/manifest.csv"):
        assert (fresh / path).read_bytes() == (author / path).read_bytes(), path
    assert dvc(fresh, "metrics", "diff").stdout.strip() == ""  # workspace = the commit: no change
    assert "up to date" in dvc(fresh, "status").stdout
    plots = json.loads(dvc(fresh, "plots", "show", "--json").stdout)["data"]
    for name, x in {"pgd": "eps", "fgsm": "eps", "corruption_severity": "severity"}.items():
        (plot,) = plots[f"reports/{TASK}/curves/{name}.json"]  # a curve per file, on its declared x
        assert plot["type"] == "vega" and plot["content"]["encoding"]["x"]["field"] == x, plot
        assert plot["content"]["data"]["values"], name

    # the pulled outputs name the author's MLflow run, which this clone's store lacks: rerunning
    # evaluate (e.g. after an evaluate param changed) stops at once and says what to do
    rerun = subprocess.run([str(BIN / "cvops"), "stage", "evaluate", "--task", TASK], cwd=fresh, env=stage_env(),
                           capture_output=True, text=True)
    assert rerun.returncode == 2, rerun.stdout + rerun.stderr
    assert "does not have" in rerun.stderr and "MLFLOW_TRACKING_URI" in rerun.stderr, rerun.stderr


def lineage_of_champion(author: Path) -> dict:
    result = subprocess.run([str(BIN / "cvops"), "lineage", f"models:/cvops-{TASK}@champion", "--json"],
                            cwd=author, env=stage_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_lineage_names_the_commits_hashes_and_commands_that_check_the_results(published):
    author = published["author"]
    lineage = lineage_of_champion(author)
    ran_at, results = git(author, "rev-parse", "HEAD~1").strip(), git(author, "rev-parse", "HEAD").strip()
    assert lineage["git"]["commit"] == ran_at and lineage["git"]["dirty"] is False, lineage["git"]
    assert lineage["git"]["remote"] == str(published["origin"])
    assert lineage["results_commit"] == results and lineage["results_on_branch"]
    assert lineage["data"]["dvc_hash"] == lock_hash(author, f"prepare@{TASK}", f"data/{TASK}")
    assert lineage["model"]["dvc_hash"] == lock_hash(author, f"train@{TASK}", f"models/{TASK}")
    assert lineage["metrics"] == json.loads((author / "reports" / TASK / "metrics.json").read_text())
    assert lineage["params"]["values"][f"tasks.{TASK}.train"]["epochs"] == 2

    checked = published["base"] / "checked"
    checked.mkdir()
    out = shell(checked, lineage["reproduce"]["check"]).stdout
    assert ran_stages(out) == [], out


@pytest.mark.slow  # retrains from scratch: minutes on 2 cores (`make test-slow`)
def test_lineage_commands_rebuild_the_champion_exactly_in_a_fresh_clone(published):
    lineage = lineage_of_champion(published["author"])
    rebuilt = published["base"] / "rebuilt"
    rebuilt.mkdir()
    out = shell(rebuilt, lineage["reproduce"]["commands"]).stdout
    assert ran_stages(out) == [f"{s}@{TASK}" for s in STAGES[:STAGES.index('evaluate') + 1]], out  # from scratch up to evaluate, the registry untouched
    repro = rebuilt / "cvops-repro"
    assert json.loads((repro / "reports" / TASK / "metrics.json").read_text()) == lineage["metrics"]
    assert lock_hash(repro, f"prepare@{TASK}", f"data/{TASK}") == lineage["data"]["dvc_hash"]
    assert lock_hash(repro, f"train@{TASK}", f"models/{TASK}") == lineage["model"]["dvc_hash"], "weights differ"
