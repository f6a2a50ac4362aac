"""`cvops lineage MODEL_URI`: where a registered model version came from, and the commands
that rebuild it from scratch in a fresh clone (read back from the tags lineage.py records at
promotion, the training run in MLflow and, when run inside the repository, git history)."""

from __future__ import annotations

import json
import os
import re
import shlex
import textwrap
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import ConfigError
from components.paths import StagePaths
from components.registry.lineage import git
from components.registry.record import read_record
from components.runtime.redact import redact

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")
NOT_RECORDED = "(not recorded)"
HISTORY_COMMITS = 200  # how far back git history is searched for the commit of the results


def resolve(client: MlflowClient, uri: str, tracking_uri: str, prefix: str = "cvops-"):
    """The model version `uri` names; a ConfigError that names what exists otherwise."""
    match = URI.match(uri)
    if not match:
        raise ConfigError(f"'{uri}' is not a model URI: use models:/<name>@<alias> or models:/<name>/<version>, "
                          "e.g. models:/cvops-classification@champion")
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        known = f"registered models: {', '.join(names)}" if names else "no model is registered yet: run the pipeline (cvops run)"
        raise ConfigError(f"{tracking_uri} has no registered model '{name}'; {known} "
                          "(another registry? set MLFLOW_TRACKING_URI)") from None
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException:
        missing = f"no alias @{alias}" if alias else f"no version {number}"
        raise ConfigError(f"{name} has {missing}; aliases: {aliases}; versions: {', '.join(map(str, versions))} "
                          f"(who moved them: cvops history {name.removeprefix(prefix)})") from None


def _run_metrics(run_id: str) -> dict[str, float]:
    """The evaluate stage's metrics.json as logged to the run (its exact keys), else the
    run's test/* metrics."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar for one small file
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/metrics.json")
    except Exception:  # not evaluated, or the artifact store is out of reach
        try:
            metrics = MlflowClient().get_run(run_id).data.metrics
        except MlflowException:
            return {}
        return {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}


def results_commit(task: str, name: str, version: str, run_id: str) -> tuple[str, bool]:
    """The newest commit whose promote output (reports/<task>/gate.json, committed with
    dvc.lock) is this version's registration, so its outputs can be pulled and checked; and
    whether a branch or tag has it (a clone gets it) rather than only a DVC experiment ref.
    ('', False) when none does, or outside the repository."""
    verdict = str(StagePaths(task).verdict)
    for refs, shared in ((["--branches", "--tags", "--remotes"], True), (["--all"], False)):
        for commit in git("log", *refs, f"-{HISTORY_COMMITS}", "--format=%H", "--", verdict).split():
            try:
                recorded = json.loads(git("show", f"{commit}:{verdict}") or "{}")
            except json.JSONDecodeError:
                continue
            if (recorded.get("model"), str(recorded.get("version")), recorded.get("run_id")) == (name, version, run_id):
                return commit, shared
    return "", False


def describe(client: MlflowClient, uri: str, tracking_uri: str, prefix: str = "cvops-") -> dict[str, Any]:
    """Everything `cvops lineage` shows, as one JSON-able dict."""
    mv = resolve(client, uri, tracking_uri, prefix)
    tags = read_record(client, mv)
    task, run_id = tags.get("cvops.task", ""), tags.get("cvops.mlflow_run_id") or mv.run_id
    try:
        run = client.get_run(run_id)
        run_info = {"run_id": run_id, "run_name": run.info.run_name, "experiment_id": run.info.experiment_id}
    except MlflowException:
        run_info = {"run_id": run_id, "run_name": None, "experiment_id": None}
    params = json.loads(tags["cvops.params"]) if tags.get("cvops.params") else {}
    lineage = {
        "uri": uri, "name": mv.name, "version": str(mv.version), "aliases": sorted(mv.aliases), "task": task,
        "git": {"commit": tags.get("cvops.git_commit", ""), "dirty": tags.get("cvops.git_dirty") == "true",
                "dirty_files": json.loads(tags.get("cvops.git_dirty_files") or "[]"),
                "branch": tags.get("cvops.git_branch", ""), "remote": tags.get("cvops.git_remote", ""),
                "root": tags.get("cvops.git_root", "")},
        "data": {"path": str(StagePaths(task).data), "dvc_hash": tags.get("cvops.data_hash", "")},
        "model": {"path": str(StagePaths(task).model_dir), "dvc_hash": tags.get("cvops.model_hash", "")},
        "params": {"hash": tags.get("cvops.params_hash", ""), "values": params},
        "dvc": {"remote": tags.get("cvops.dvc_remote", ""), "experiment": tags.get("cvops.dvc_experiment", ""),
                "experiment_baseline": tags.get("cvops.dvc_experiment_baseline", "")},
        "mlflow": {"tracking_uri": tracking_uri, **run_info},
        "prefect": {"flow_run_id": tags.get("cvops.prefect_flow_run_id", "")},
        "ray_address": tags.get("cvops.ray_address", ""),
        "platform": tags.get("cvops.platform", ""),
        "packages": {k.removeprefix("cvops.version."): v for k, v in sorted(tags.items()) if k.startswith("cvops.version.")},
        "gate": {"passed": tags.get("cvops.gate.passed") == "true", "reason": tags.get("cvops.gate.reason", "")},
        "metrics": _run_metrics(run_id),
    }
    lineage["results_commit"], lineage["results_on_branch"] = results_commit(task, mv.name, str(mv.version), run_id)
    lineage["reproduce"] = reproduce_commands(lineage)
    return redact(lineage)  # versions tagged before redaction, and the tracking URI


def reproduce_commands(lineage: dict[str, Any]) -> dict[str, Any]:
    """`commands` rebuild the model from scratch (every stage of its task up to evaluate, forced:
    the registry is left alone) in a fresh clone; `check` pulls the outputs of the commit
    where this version's results were committed and lets DVC confirm nothing would rerun."""
    git, task, dvc = lineage["git"], lineage["task"], lineage["dvc"]
    source = git["remote"] or git["root"] or "<URL of the cvops repository>"
    metrics = StagePaths(task).metrics
    clone = [f"git clone {shlex.quote(source)} cvops-repro && cd cvops-repro"]
    install = ["make install", "source .venv/bin/activate"]
    # a `dvc exp run` / `cvops run --set` result: its params (and outputs) live in the experiment
    experiment = [f"dvc exp pull origin {dvc['experiment']} && dvc exp apply {dvc['experiment']}"] if dvc["experiment"] else []
    commands = [*clone, f"git checkout {git['commit'] or '<commit>'}", *experiment, *install,
                f"dvc repro --force evaluate@{task}", f"dvc metrics show {metrics}"]
    notes = [f"{metrics} should equal the metrics above; dvc.lock's {lineage['model']['path']} hash "
             f"{lineage['model']['dvc_hash'] or NOT_RECORDED} (identical weights) on the same CPU type and thread "
             "count (README: Reproduce)"]
    if "robustness/mce" in lineage["metrics"]:
        notes.append("robustness/mce compares with the @champion of the time: a fresh MLflow store has none, so no mce")
    if git["dirty"]:
        notes.append(f"the working tree differed from the commit when promoted ({', '.join(git['dirty_files'])}): "
                     "the commit alone may not rebuild this model; its params are listed above")
    if dvc["experiment"]:
        notes.append(f"DVC experiment {dvc['experiment']}: `dvc exp push origin {dvc['experiment']}` in the original "
                     "repository makes it pullable; there, `dvc exp apply` alone restores it")
    if lineage["params"]["values"].get(f"tasks.{task}.data", {}).get("source") == "path":
        notes.append("data.source is 'path': prepare copies data.path, which must exist here (or `dvc pull` the data)")
    check = []
    if lineage["results_commit"] and (lineage["results_on_branch"] or experiment):
        # a local-path remote is per machine (the default one per checkout): name the one used
        remote = [f"dvc remote add --local -d cvops-source {shlex.quote(dvc['remote'])}"] if dvc["remote"] and "://" not in dvc["remote"] else []
        checkout = [f"git checkout {lineage['results_commit']}"] if lineage["results_on_branch"] else [
            f"git checkout {git['commit'] or dvc['experiment_baseline']}", *experiment]
        check = [*clone, *checkout, *install, *remote, f"dvc pull --with-deps promote@{task}",
                 f"dvc repro promote@{task}", f"dvc metrics show {metrics}"]
    return {"commands": commands, "check": check, "notes": notes}


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"{title:10s}{lines[0]}", *(f"{'':10s}{line}" for line in lines[1:])]


def format_lineage(lin: dict[str, Any]) -> str:
    git, run, dvc = lin["git"], lin["mlflow"], lin["dvc"]
    state = "DIRTY: " + ", ".join(git["dirty_files"]) if git["dirty"] else "clean"
    headline = "  ".join(f"{k} {v:.4f}" for k, v in lin["metrics"].items() if "/" not in k) or NOT_RECORDED
    params = [textwrap.fill(f"{key}: {json.dumps(value)}", 100, subsequent_indent="    ")
              for key, value in lin["params"]["values"].items()] or [NOT_RECORDED]
    params = [line for block in params for line in block.splitlines()]
    out = [f"{lin['name']} version {lin['version']} ({lin['uri']}; aliases: "
           f"{', '.join('@' + a for a in lin['aliases']) or 'none'}), task {lin['task'] or NOT_RECORDED}; "
           f"gate {'passed' if lin['gate']['passed'] else 'not passed'}: {lin['gate']['reason']}", ""]
    out += _section("code", [f"git {git['commit'] or NOT_RECORDED} ({state}) on {git['branch'] or '?'}",
                             f"repository {git['remote'] or git['root'] or NOT_RECORDED}"])
    out += _section("data", [f"{lin['data']['path']}  DVC hash {lin['data']['dvc_hash'] or NOT_RECORDED}"])
    out += _section("model", [f"{lin['model']['path']}  DVC hash {lin['model']['dvc_hash'] or NOT_RECORDED}"])
    if lin["results_commit"]:
        out += _section("results", [f"committed in {lin['results_commit']} (dvc.lock, reports/{lin['task']}/)"
                                    + ("" if lin["results_on_branch"] else " on a DVC experiment ref only")])
    out += _section("params", [f"hash {lin['params']['hash'] or NOT_RECORDED} (tasks.{lin['task']})", *params])
    out += _section("runs", [f"MLflow run {run['run_id']} ({run['run_name'] or 'not in this store'}) at {run['tracking_uri']}",
                             f"Prefect flow run {lin['prefect']['flow_run_id'] or 'none (dvc repro)'}; Ray {lin['ray_address'] or '?'}"
                             + (f"; DVC experiment {dvc['experiment']}" if dvc["experiment"] else "")])
    out += _section("metrics", [headline, f"all: {StagePaths(lin['task']).metrics}, or the run's artifact evaluation/metrics.json"])
    out += _section("packages", [", ".join(f"{k} {v}" for k, v in lin["packages"].items()) or NOT_RECORDED,
                                 f"promoted on {lin['platform'] or '?'}; DVC remote {dvc['remote'] or NOT_RECORDED}"])
    repro = lin["reproduce"]
    out += ["", "Reproduce from scratch (a fresh clone; every stage of the task up to evaluate):",
            *(f"  {c}" for c in repro["commands"]), *(f"  # {n}" for n in repro["notes"])]
    if repro["check"]:
        out += ["", "Or check the recorded outputs (nothing should rerun):", *(f"  {c}" for c in repro["check"])]
    return "\n".join(out)
