"""cv_pipeline: the DVC stages as Prefect tasks (no ML logic here).

Each stage of dvc.yaml runs as one Prefect task through DVC's Python API, so unchanged
stages are skipped by their content hashes, and its output streams into the Prefect log.
With parameter overrides, the run is a named DVC experiment (`dvc exp run -S ...`), so it
is reproducible by name. Each task ends with a markdown artifact: metrics, gate verdict and
where to find the run in MLflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import components  # noqa: F401  (telemetry off before prefect is imported)

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Completed, Failed  # noqa: E402

from components.errors import PERMANENT_EXIT_CODES, ConfigError  # noqa: E402
from components.paths import STAGES  # noqa: E402
from components.registry.gate import gate_table  # noqa: E402
from components.runtime.redact import redact  # noqa: E402
from flows import dvc_runner  # noqa: E402


class GateRejected(RuntimeError):
    """The pipeline finished but a candidate did not pass its promotion gate."""


def repo_root() -> Path:
    """The workspace: CVOPS_ROOT, else the working directory if it holds dvc.yaml, else this
    checkout."""
    for candidate in (os.environ.get("CVOPS_ROOT"), os.getcwd(), Path(__file__).resolve().parents[1]):
        if candidate and (Path(candidate) / "dvc.yaml").exists():
            return Path(candidate).resolve()
    raise FileNotFoundError("no dvc.yaml found: run from the cvops repository or set CVOPS_ROOT")


def _retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures (a Ray node lost, a locked database), never a bad config or
    dataset: those need a person."""
    try:
        state.result()
    except dvc_runner.StageFailed as exc:
        return exc.returncode not in PERMANENT_EXIT_CODES
    except Exception:
        return True
    return True


@task(name="dvc-stage", task_run_name="{target}", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=_retry_unless_permanent)
def run_stage(root: str, target: str):
    """Whether the stage ran; a stage DVC skipped ends in a 'Skipped' state (Completed, so
    the flow goes on), so the UI tells it from one that ran."""
    logger = get_run_logger()
    ran = dvc_runner.reproduce(Path(root), target, logger)
    logger.info("%s: %s", target, "ran" if ran else "unchanged, skipped by DVC")
    return True if ran else Completed(data=False, name="Skipped", message=f"{target}: unchanged, skipped by DVC")


@task(name="dvc-experiment", retries=0)
def run_experiment(root: str, targets: list[str], overrides: dict[str, str], name: str | None) -> str:
    """The stages as a DVC experiment in a temporary copy of the workspace; returns its commit."""
    from components.config import load_params
    from components.runtime import tracking

    logger = get_run_logger()
    os.chdir(root)  # the store paths params.yaml names are the workspace's, not the copy's
    params = load_params(Path(root) / "params.yaml")
    tracking.setup(params)  # the experiment's artifact root is the workspace's
    env = {"MLFLOW_TRACKING_URI": tracking.tracking_uri(params), "CVOPS_ROOT": root}
    exp_name, rev = dvc_runner.run_experiment(Path(root), targets, overrides, name, logger, env)
    logger.info("DVC experiment '%s' (see `dvc exp show`; `dvc exp apply %s` puts it in the workspace)",
                exp_name, exp_name)
    return rev


def _mlflow_links(run_id: str, model: str, version: str) -> str:
    """Markdown links into the MLflow UI when a tracking server is set, else how to open it."""
    uri = redact(os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/"))
    if uri.startswith("http"):
        return (f"MLflow run: [{run_id}]({uri}/#/runs/{run_id}); model version: "
                f"[{model} v{version}]({uri}/#/models/{model}/versions/{version})")
    return (f"MLflow run: `{run_id}`, model `{model}` v{version} "
            "(open with `mlflow ui --backend-store-uri sqlite:///mlruns.db`, or `cvops up`)")


def _against(verdict: dict[str, Any]) -> str:
    base = verdict.get("baseline_version")
    return f"Checked against `@champion` v{base} on the same test data." if base else (
        "Cold start (no champion): value thresholds only.")


def _code(text: Any) -> str:
    """Text as a markdown code span: metric names like fgsm_accuracy@0.005 stay text (no
    e-mail link, no italics from underscores)."""
    return "`" + str(text).replace("`", "'") + "`"


@task(name="report", task_run_name="report {task_name}")
def report(root: str, task_name: str, promoted_now: bool = True, rev: str | None = None) -> dict[str, Any]:
    """Publish the task's metrics and gate verdict as a Prefect markdown artifact (an
    experiment's, from its commit, when `rev` names one). promoted_now: whether the promote
    stage ran in this flow run (else the verdict is the one of an earlier run, and the
    artifact says so)."""
    def read(name: str) -> dict[str, Any]:
        if rev:
            return json.loads(dvc_runner.show_file(Path(root), rev, f"reports/{task_name}/{name}"))
        return json.loads((Path(root) / "reports" / task_name / name).read_text())

    metrics, verdict = read("metrics.json"), read("gate.json")
    rows = "\n".join(f"| {_code(k)} | {v:.4f} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
    if not promoted_now:
        outcome = (f"**unchanged**: nothing to promote in this run (no input changed); `{verdict['model']}@champion` "
                   f"is version {verdict['champion'] or verdict['version']}")
    elif verdict["passed"]:
        outcome = f"**promoted**: `{verdict['model']}@champion` is version {verdict['version']}"
    else:
        outcome = f"**not promoted** ({verdict['reason']}); `@champion` stays {verdict['champion']}"
    markdown = (
        f"# {task_name}\n\nCandidate `{verdict['model']}` version {verdict['version']}: {outcome}.\n\n"
        f"{_mlflow_links(verdict['run_id'], verdict['model'], verdict['version'])}\n\n## Gate\n\n{_against(verdict)}\n\n{gate_table(verdict)}\n\n"
        f"## Test metrics\n\n| metric | value |\n|---|---|\n{rows}\n"
    )
    create_markdown_artifact(markdown=markdown, key=f"cvops-{task_name.replace('_', '-')}", description=f"{task_name}: metrics and gate verdict")
    return {"metrics": metrics, "verdict": verdict}


@task(name="gate verdict", task_run_name="gate verdict {task_name}")
def gate_verdict(task_name: str, verdict: dict[str, Any]):
    """The gate's decision as a task state: a rejection is a Failed task that gives the
    reason (a verdict, not a crash: no traceback), a promotion a Completed one."""
    if verdict["passed"]:
        return Completed(message=f"{verdict['model']} v{verdict['version']} promoted to @champion")
    return Failed(message=f"{verdict['model']} v{verdict['version']} not promoted: {verdict['reason']}")


@flow(name="cv-pipeline", log_prints=True)
def cv_pipeline(tasks: list[str] | None = None, overrides: dict[str, str] | None = None,
                experiment_name: str | None = None) -> dict[str, Any]:
    """Run prepare -> validate -> train -> evaluate -> promote for each task.

    tasks: subset of params.yaml's pipeline.tasks (default: all of them).
    overrides: params.yaml values to change, e.g. {"tasks.classification.train.epochs": "3"};
        the run becomes a DVC experiment named `experiment_name`.
    """
    from components.config import load_params

    logger = get_run_logger()
    root = repo_root()
    params = load_params(root / "params.yaml")
    tasks = tasks or params.pipeline.tasks
    unknown = sorted(set(tasks) - set(params.pipeline.tasks))
    if unknown:
        raise ConfigError(f"tasks {unknown} are not in params.yaml pipeline.tasks {params.pipeline.tasks}: "
                          "add them there, or pick from those")
    os.environ["CVOPS_FLOW_RUN_ID"] = str(flow_run.get_id() or "")  # lineage tag on registered versions

    promoted_now, rev = dict.fromkeys(tasks, True), None
    if overrides:
        rev = run_experiment(str(root), [f"{stage}@{t}" for t in tasks for stage in STAGES], overrides, experiment_name)
    else:
        for task_name in tasks:
            for stage in STAGES:
                ran = run_stage(str(root), f"{stage}@{task_name}")
                if stage == "promote":  # True, or the Skipped state itself (Prefect hands a returned state back)
                    promoted_now[task_name] = ran is True

    results = {t: report(str(root), t, promoted_now[t], rev) for t in tasks}
    rejected = {t: r["verdict"]["reason"] for t, r in results.items() if not r["verdict"]["passed"]}
    for task_name, result in results.items():
        verdict = result["verdict"]
        gate_verdict(task_name, verdict, return_state=True)  # a rejection: a red task with its reason
        logger.info("%s: %s version %s %s", task_name, verdict["model"], verdict["version"],
                    "promoted to @champion" if verdict["passed"] else f"not promoted: {verdict['reason']}")
    if rejected:
        why = "; ".join(f"{t}: {reason}" for t, reason in rejected.items())
        # returned, not raised: the flow run fails with the reason and no traceback in its log;
        # the caller (cvops run) still gets GateRejected from the flow's result
        return Failed(message=f"gate rejected: {why}", data=GateRejected(why))
    return {"passed": True, "tasks": results}
