"""cv_pipeline: the DVC stages as Prefect tasks (no ML logic here).

Each stage of dvc.yaml runs as one Prefect task through DVC's Python API, so unchanged
stages are skipped by their content hashes (the task ends 'Skipped'), and its output streams
into that task's log; progress bars become Prefect progress artifacts. With parameter
overrides, the run is a named DVC experiment (`dvc exp run -S ...`), reproducible by name,
still a task per stage. A gate rejection is a failed promote task that gives the reason.
Each ML task ends with a markdown artifact: metrics, gate verdict and where to find the run
in MLflow.

Without `cvops up` (or PREFECT_API_URL), Prefect starts a temporary server; its database is
the workspace's (PREFECT_HOME .cvops/prefect, as `cvops up` uses), so the UI of `cvops up`
shows those runs afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import components  # noqa: F401  (telemetry off before prefect is imported)
from components.runtime.servers import prefect_home


def repo_root() -> Path:
    """The workspace: CVOPS_ROOT, else the working directory if it holds dvc.yaml, else this
    checkout."""
    for candidate in (os.environ.get("CVOPS_ROOT"), os.getcwd(), Path(__file__).resolve().parents[1]):
        if candidate and (Path(candidate) / "dvc.yaml").exists():
            return Path(candidate).resolve()
    raise FileNotFoundError("no dvc.yaml found: run from the cvops repository or set CVOPS_ROOT")


os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# before prefect is imported (it reads its settings then); an explicit PREFECT_HOME wins
if "PREFECT_HOME" not in os.environ:
    _home = prefect_home(repo_root())
    _home.mkdir(parents=True, exist_ok=True)  # Prefect makes the last level only
    os.environ.setdefault("PREFECT_HOME", str(_home))

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import (  # noqa: E402
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run, task_run  # noqa: E402
from prefect.states import Completed, Failed, State  # noqa: E402

from components.errors import PERMANENT_EXIT_CODES, ConfigError  # noqa: E402
from components.paths import STAGES, StagePaths  # noqa: E402
from components.registry.gate import gate_table  # noqa: E402
from components.runtime.redact import redact  # noqa: E402
from flows import dvc_runner  # noqa: E402


class GateRejected(RuntimeError):
    """The pipeline finished but a candidate did not pass its promotion gate."""


def _retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures (a Ray node lost, a locked database), never a bad config or
    dataset: those need a person. Nor a gate rejection: a verdict, not a failure."""
    if state.name == REJECTED:
        return False
    try:
        state.result()
    except dvc_runner.StageFailed as exc:
        return exc.returncode not in PERMANENT_EXIT_CODES
    except Exception:
        return True
    return True


REJECTED, SKIPPED = "Rejected", "Skipped"


class _RunLogger:
    """Logs to the Prefect run in progress when the line is written: a stage's task run
    (an experiment's stages run inside one DVC call), else the flow run."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        get_run_logger().log(level, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self.log(logging.INFO, msg, *args)


class _Progress:
    """A stage's tqdm bars as Prefect progress artifacts, one per bar and task run, updated in
    place (the bar's redraws would otherwise be dozens of log records)."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str | None, str], Any] = {}

    def __call__(self, description: str, percent: float) -> None:
        key = (task_run.get_id(), description)
        if key not in self.ids:
            slug = re.sub(r"[^a-z0-9]+", "-", description.lower()).strip("-")
            self.ids[key] = create_progress_artifact(percent, key=f"progress-{slug}", description=description)
        else:
            update_progress_artifact(self.ids[key], percent)


def _stage_state(target: str, ran: bool, workdir: Path) -> State:
    """A stage's end state: 'Skipped' (Completed) when DVC found it unchanged; for promote,
    the gate's verdict: a rejection is a Failed 'Rejected' state with the reason (no
    traceback, no retry), so the UI shows a red promote task that says why."""
    stage, _, task_name = target.partition("@")
    if not ran:
        return Completed(data=False, name=SKIPPED, message=f"{target}: unchanged, skipped by DVC")
    if stage == "promote":
        verdict = json.loads((workdir / StagePaths(task_name).verdict).read_text())
        if not verdict["passed"]:
            return Failed(data=True, name=REJECTED,
                          message=f"{verdict['model']} v{verdict['version']} not promoted: {verdict['reason']}")
        return Completed(data=True, message=f"{verdict['model']} v{verdict['version']} promoted to @champion")
    return Completed(data=True, message=f"{target}: ran")


@task(name="dvc-stage", task_run_name="{target}", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=_retry_unless_permanent)
def run_stage(root: str, target: str) -> State:
    """`dvc repro --single-item` of one stage in the workspace, as `_stage_state` says it ended."""
    logger = get_run_logger()
    ran = dvc_runner.reproduce(Path(root), target, _RunLogger(), _Progress())
    logger.info("%s: %s", target, "ran" if ran else "unchanged, skipped by DVC")
    return _stage_state(target, ran, Path(root))


@task(name="dvc-experiment-stage", task_run_name="{target}", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=_retry_unless_permanent, cache_policy=NO_CACHE)
def experiment_stage(target: str, workdir: str, reproduce: Callable[[], bool]) -> State:
    """One stage of a DVC experiment, in DVC's temporary copy of the workspace (`workdir`);
    DVC calls it in stage order (the flow's call of `dvc exp run` waits for it)."""
    ran = reproduce()
    get_run_logger().info("%s: %s", target, "ran" if ran else "unchanged, skipped by DVC")
    return _stage_state(target, ran, Path(workdir))


def run_experiment(root: str, targets: list[str], overrides: dict[str, str], name: str | None,
                   each_stage: dvc_runner.EachStage) -> str:
    """The stages as a DVC experiment in a temporary copy of the workspace, each stage run by
    `each_stage` (a task); returns the experiment's commit."""
    from components.config import load_params
    from components.runtime import tracking

    logger = get_run_logger()
    os.chdir(root)  # the store paths params.yaml names are the workspace's, not the copy's
    params = load_params(Path(root) / "params.yaml")
    tracking.setup(params)  # the experiment's artifact root is the workspace's
    env = {"MLFLOW_TRACKING_URI": tracking.tracking_uri(params), "CVOPS_ROOT": root}
    exp_name, rev = dvc_runner.run_experiment(Path(root), targets, overrides, name, _RunLogger(), env,
                                              _Progress(), each_stage)
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


def _gate_table(verdict: dict[str, Any]) -> str:
    """The gate's one table renderer, its metric names as code spans."""
    checks = [{**check, "metric": _code(check["metric"])} for check in verdict.get("checks", [])]
    return gate_table({**verdict, "checks": checks})


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
        f"{_mlflow_links(verdict['run_id'], verdict['model'], verdict['version'])}\n\n## Gate\n\n{_against(verdict)}\n\n{_gate_table(verdict)}\n\n"
        f"## Test metrics\n\n| metric | value |\n|---|---|\n{rows}\n"
    )
    create_markdown_artifact(markdown=markdown, key=f"cvops-{task_name.replace('_', '-')}", description=f"{task_name}: metrics and gate verdict")
    return {"metrics": metrics, "verdict": verdict}


@flow(name="cv-pipeline", log_prints=True)
def cv_pipeline(tasks: list[str] | None = None, overrides: dict[str, str] | None = None,
                experiment_name: str | None = None) -> dict[str, Any]:
    """Run prepare -> validate -> tune -> train -> evaluate -> export -> promote for each task;
    DVC skips the stages whose inputs did not change.

    Args:
        tasks: Which ML tasks to run, a subset of params.yaml `pipeline.tasks` (e.g.
            ["classification"]). Empty: all of them.
        overrides: params.yaml values to change for this run, dotted key to value, e.g.
            {"tasks.classification.train.epochs": "3"}. Any override makes the run a DVC
            experiment (`dvc exp run -S`) in a temporary copy: the workspace and its
            @champion inputs stay as committed. Empty: a plain `dvc repro`.
        experiment_name: Name of that DVC experiment (`dvc exp show`, `dvc exp apply NAME`);
            used only with overrides. Empty: DVC picks one.
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

    ran: dict[str, bool] = {}  # stage address -> it ran (False: DVC skipped it)
    rev = None
    if overrides:
        def each_stage(target: str, workdir: Path, reproduce: Callable[[], bool]) -> bool:
            state = experiment_stage(target, str(workdir), reproduce, return_state=True)
            if state.is_failed() and state.name != REJECTED:
                state.result()  # the stage's error, to DVC (which then stops the experiment)
            ran[target] = state.name != SKIPPED
            return ran[target]

        rev = run_experiment(str(root), [f"{stage}@{t}" for t in tasks for stage in STAGES], overrides,
                             experiment_name, each_stage)
    else:
        for task_name in tasks:
            for stage in STAGES:
                target = f"{stage}@{task_name}"
                state = run_stage(str(root), target, return_state=True)
                if state.is_failed() and state.name != REJECTED:
                    state.result()  # the stage's error: the flow stops here
                ran[target] = state.name != SKIPPED

    results = {t: report(str(root), t, ran.get(f"promote@{t}", False), rev) for t in tasks}
    rejected = {t: r["verdict"]["reason"] for t, r in results.items() if not r["verdict"]["passed"]}
    for task_name, result in results.items():
        verdict = result["verdict"]
        logger.info("%s: %s version %s %s", task_name, verdict["model"], verdict["version"],
                    "promoted to @champion" if verdict["passed"] else f"not promoted: {verdict['reason']}")
    if rejected:
        why = "; ".join(f"{t}: {reason}" for t, reason in rejected.items())
        # returned, not raised: the flow run fails with the reason and no traceback in its log
        # (the promote task that rejected is red with the same reason); the caller (cvops run)
        # still gets GateRejected from the flow's result
        return Failed(message=f"gate rejected: {why}", data=GateRejected(why))
    return {"passed": True, "tasks": results}
