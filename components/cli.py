"""The `cvops` command. Run from the repository root (where dvc.yaml and params.yaml are)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from components.errors import CONFIG_ERROR, ConfigError, DataContractError, exit_code
from components.paths import STAGES

EPILOG = """\
examples:
  cvops run                                   whole pipeline, every task in params.yaml
  cvops run --tasks classification            one task
  cvops run --set tasks.classification.train.epochs=3
                                              overrides become a named DVC experiment
  cvops stage train --task classification     one DVC stage's command (what dvc.yaml calls)
  cvops submit train --task classification --address http://HEAD:8265
                                              the same stage as a Ray Job on a cluster
  dvc repro                                   the same pipeline without Prefect
  cvops history classification                who moved @champion / @challenger, when, why
  cvops rollback classification [--to 3]      @champion back to an earlier blessed version
  cvops predict classification a.png b.png    the champion's predictions and overlays
  cvops lineage models:/cvops-classification@champion
                                              its commit, data, params, runs; how to rebuild it
  cvops compare classification                its experiments: metrics, gate, changed params
  cvops up / cvops down                       local Prefect + MLflow servers and a worker
"""


def _stage(args: argparse.Namespace) -> int:
    import signal

    from components.config import load_params

    # SIGTERM (a Prefect cancel, `kill`, a container stop) unwinds like Ctrl-C: the stage's
    # `finally` blocks run, so its local Ray cluster is shut down instead of orphaned
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    params = load_params(args.params)
    module = importlib.import_module(f"components.stages.{args.name}")
    module.run(params, args.task)
    return 0


def _run(args: argparse.Namespace) -> int:
    from components.config import load_params

    params = load_params()  # a bad params.yaml or task is a message here, not a flow's traceback
    for task in args.tasks or []:
        if task not in params.pipeline.tasks:
            params.task(task)  # no such section: the message names the closest
            raise ConfigError(f"params.yaml: task '{task}' is not in pipeline.tasks ({', '.join(params.pipeline.tasks)}); "
                              "fix: add it there, or --tasks one of them")
    bad = [item for item in args.set if "=" not in item]
    if bad:
        raise ConfigError(f"--set needs KEY=VALUE, got {bad} (e.g. --set tasks.classification.train.epochs=3)")
    _use_running_servers()
    from flows.pipeline import GateRejected, cv_pipeline

    overrides = dict(item.split("=", 1) for item in args.set)
    try:
        cv_pipeline(tasks=args.tasks or None, overrides=overrides, experiment_name=args.name)
        code = 0
    except GateRejected as exc:
        print(f"cvops: gate rejected: {exc}", file=sys.stderr)
        code = 1
    print_where_to_look(args.tasks)
    return code


def _servers():
    from pathlib import Path

    from components.config import load_params
    from components.runtime.servers import Servers

    return Servers(Path.cwd(), load_params())


def _up(args: argparse.Namespace) -> int:
    servers = _servers()
    try:
        servers.up(deploy=not args.no_deploy, report=lambda line: print(f"cvops up: {line}", flush=True))
    except RuntimeError as exc:  # a server did not come up: its log tail and the fix
        print(f"cvops: error: {exc}", file=sys.stderr)
        return 1
    print(servers.describe())
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = _servers().down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _use_running_servers() -> None:
    """While `cvops up` servers run, the pipeline logs to them (an explicit env var wins)."""
    import os
    from pathlib import Path

    if not Path("prefect.yaml").exists():  # not a workspace `cvops up` serves
        return
    servers = _servers()
    if servers.running():
        for key, value in {**servers.environment(), **servers.credentials()}.items():
            os.environ.setdefault(key, value)


def print_where_to_look(tasks: list[str] | None) -> None:
    import json
    from pathlib import Path

    from components.config import load_params
    from components.paths import StagePaths

    params = load_params()
    lines = ["", "Where to look:"]
    for task in tasks or params.pipeline.tasks:
        paths = StagePaths(task)
        if not paths.verdict.exists():
            continue
        verdict = json.loads(paths.verdict.read_text())
        metrics = json.loads(paths.metrics.read_text())
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k and isinstance(v, int | float))
        lines += [
            f"  {task}: {shown}",
            f"    metrics {paths.metrics}, plots {paths.evaluation}/, gate verdict {paths.verdict}",
            f"    MLflow run {verdict['run_id']}; model {verdict['model']} v{verdict['version']}"
            f" (@champion: v{verdict['champion']})",
        ]
    from components.runtime.redact import redact

    uri, ports = redact(params.tracking.uri), params.servers
    lines += [
        f"  MLflow UI:   cvops up, or mlflow ui --backend-store-uri {uri} --port {ports.mlflow_port}"
        f"   (http://127.0.0.1:{ports.mlflow_port})",
        f"  Prefect UI:  cvops up                             (http://127.0.0.1:{ports.prefect_port}; flow runs, artifacts)",
        "  Reproduce:   dvc repro        compare: cvops compare / dvc metrics show / dvc plots show",
        "  Lineage:     cvops lineage <task>   (commit, data, params, runs of its @champion; how to rebuild it)",
    ]
    if Path(".venv").exists():
        lines.append("  (commands above run inside the project environment: prefix them with `uv run`)")
    print("\n".join(lines))


def _submit(args: argparse.Namespace) -> int:
    from components.config import load_params
    from components.runtime.submit import submit

    load_params().task(args.task)  # a typo is a message here, not a failed job on the cluster

    return submit(args.name, args.task, args.address, args.dry_run)


def _tasks(args: argparse.Namespace) -> int:
    from components.tasks import TASKS

    for name, spec in TASKS.items():
        print(f"{name:16s} monitor={spec.monitor:10s} models: {', '.join(spec.models)}")
    return 0


def _registry(args: argparse.Namespace, command: Callable) -> int:
    """Run a registry command (components/registry/commands.py) and print what it returns."""
    from components.config import load_params
    from components.registry.rollback import RollbackError
    from components.runtime.redact import redact

    try:
        print(redact(command(load_params(args.params))))
    except RollbackError as exc:
        print(f"cvops: rollback refused: {exc}", file=sys.stderr)
        return 1
    return 0


def _history(args: argparse.Namespace) -> int:
    from components.registry.commands import history_command

    return _registry(args, lambda params: history_command(params, args.task, args.json))


def _rollback(args: argparse.Namespace) -> int:
    from components.registry.commands import rollback_command

    return _registry(args, lambda params: rollback_command(params, args.task, args.to))


def _predict(args: argparse.Namespace) -> int:
    """One line per image on stdout; each input that could not be predicted named on stderr
    (the others are still predicted), then exit 2 if there was any. --runtime onnx / onnx-int8:
    the same registered version's exported ONNX model on ONNX Runtime."""
    from components.config import load_params
    from components.registry.commands import predict_command

    text, failed = predict_command(load_params(args.params), args.task, args.images, args.out, args.alias,
                                   args.conf, args.iou, args.max_det, args.runtime)
    print(text)
    for path, why in failed.items():
        print(f"cvops predict: skipped {path}: {why}", file=sys.stderr)
    return 2 if failed else 0


def _lineage(args: argparse.Namespace) -> int:
    from components.registry.commands import lineage_command

    return _registry(args, lambda params: lineage_command(params, args.model, args.json))


def _compare(args: argparse.Namespace) -> int:
    from components.config import load_params
    from components.runtime.compare import compare

    params = load_params(args.params)
    for task in args.tasks or []:
        params.task(task)  # a typo is a message naming the closest task
    print(compare(args.tasks or list(params.pipeline.tasks), args.num))
    return 0


def _operating_default(key: str) -> str:
    """Each boxed task's default for one operating-point flag, for --help (import-free table)."""
    from components.tasks import OPERATING_POINTS

    return ", ".join(f"{task} {point[key]}" for task, point in OPERATING_POINTS.items())


def _task_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="task name, a section of params.yaml's `tasks`")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


def _configured_ports(params_file: str = "params.yaml") -> tuple[int, int]:
    """(Prefect, MLflow) ports of params.yaml `servers` for the help text: plain YAML (the
    full validation costs imports every command would pay), defaults when unreadable."""
    try:
        import yaml

        with open(params_file) as f:
            # libyaml when present, as config.SAFE_LOADER (not imported: pydantic is not free)
            servers = (yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}).get("servers") or {}
        return int(servers.get("prefect_port", 4200)), int(servers.get("mlflow_port", 5000))
    except Exception:  # missing or invalid: the command itself reports it properly
        return 4200, 5000


def build_parser() -> argparse.ArgumentParser:
    prefect_port, mlflow_port = _configured_ports()
    parser = argparse.ArgumentParser(
        prog="cvops", description="Computer-vision MLOps: data -> validate -> train -> evaluate -> promote.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the pipeline as a Prefect flow over the DVC stages",
                         description="Run the pipeline (Prefect flow; each DVC stage a Prefect task). "
                         "Unchanged stages are skipped by DVC. With --set, the run is a named DVC experiment.")
    run.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to run (default: all in params.yaml)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a params.yaml value (dotted key); repeatable")
    run.add_argument("--name", help="name of the DVC experiment when --set is given")
    run.set_defaults(func=_run)

    stage = sub.add_parser("stage", help="run one pipeline stage for one task (dvc.yaml's commands)",
                           description="Run one stage for one task. dvc.yaml calls this; prefer `dvc repro` "
                           "or `cvops run`, which skip stages whose inputs did not change.")
    stage.add_argument("name", choices=STAGES, help="the stage")
    stage.add_argument("--task", required=True, help="task name, a section of params.yaml's `tasks`")
    stage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    stage.set_defaults(func=_stage)

    submit = sub.add_parser("submit", help="run one stage as a Ray Job on a cluster (ray job submit)",
                            description="Submit `cvops stage NAME --task TASK` as a Ray Job: this repository is "
                            "the job's working directory. Needs the cluster's job server (dashboard, port 8265).")
    submit.add_argument("name", choices=STAGES, help="the stage")
    submit.add_argument("--task", required=True, help="task name, a section of params.yaml's `tasks`")
    submit.add_argument("--address", help="job server, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS)")
    submit.add_argument("--dry-run", action="store_true", help="print the `ray job submit` command only")
    submit.set_defaults(func=_submit)
    up = sub.add_parser("up", help="start Prefect and MLflow servers and a worker on 127.0.0.1",
                        description=f"Start a Prefect server (UI :{prefect_port}), an MLflow server (UI :{mlflow_port}) and a "
                        "Prefect worker, apply prefect.yaml's deployments, and print the URLs. Ports in "
                        "params.yaml `servers`; state, pid files and logs in .cvops/.")
    up.add_argument("--no-deploy", action="store_true", help="do not apply prefect.yaml's deployments")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop what `cvops up` started")
    down.set_defaults(func=_down)

    tasks = sub.add_parser("tasks", help="list the registered tasks and their models")
    tasks.set_defaults(func=_tasks)

    history = sub.add_parser("history", help="print the audit trail of a task's model aliases",
                             description="Every move of @champion and @challenger of cvops-<TASK> (who, what, "
                             "when, from, to, gate verdict), oldest first, as kept in the MLflow registry.")
    _task_argument(history)
    history.add_argument("--json", action="store_true", help="print the entries as JSON")
    history.set_defaults(func=_history)

    rollback = sub.add_parser("rollback", help="move a task's @champion back to an earlier blessed version",
                              description="Point cvops-<TASK>@champion at an earlier version that passed the "
                              "gate (default: the newest blessed version older than the current champion). "
                              "The move is appended to the audit trail (`cvops history TASK`).")
    _task_argument(rollback)
    rollback.add_argument("--to", metavar="VERSION", help="the version to make champion (must have passed the gate)")
    rollback.set_defaults(func=_rollback)

    predict = sub.add_parser("predict", help="predict images with a task's @champion; writes JSON, overlays, masks",
                             description="Predict images with the model registered as <TASK>@<ALIAS>. IMAGE may be "
                             "a file, a folder (its image files) or a quoted glob ('data/**/*.png'). Writes "
                             "predictions.json, one <image>.overlay.png per image and, for segmentation, "
                             "<image>.mask.png (pixel = class id) and <image>.mask.colour.png. Prints one line per "
                             "image; inputs that are not readable images are named on stderr and skipped, and the "
                             "exit code is then 2.", formatter_class=argparse.RawDescriptionHelpFormatter)
    _task_argument(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    predict.add_argument("--out", metavar="DIR", help="output folder (default: predictions/<TASK>)")
    predict.add_argument("--alias", default="champion", help="registry alias to use (default: champion)")
    predict.add_argument("--conf", type=float, metavar="SCORE",
                         help=f"boxes: lowest score kept (default: the evaluation's operating point, {_operating_default('conf')})")
    predict.add_argument("--iou", type=float, metavar="IOU",
                         help=f"boxes: class-aware NMS IoU, one box per object (default: {_operating_default('iou')})")
    predict.add_argument("--max-det", type=int, metavar="N",
                         help=f"boxes: most boxes per image (default: {_operating_default('max_det')})")
    predict.add_argument("--runtime", choices=("torch", "onnx", "onnx-int8"), default="torch",
                         help="torch: the registered pyfunc; onnx / onnx-int8: the version's exported ONNX FP32 / "
                         "INT8 model on ONNX Runtime (same output records)")
    predict.set_defaults(func=_predict)

    lineage = sub.add_parser("lineage", help="where a registered model came from, and how to rebuild it",
                             description="The lineage of a model version (git commit and dirty flag, DVC hashes of "
                             "its data and model, its params, MLflow run, Prefect flow run, package versions) and the "
                             "commands that rebuild it from scratch in a fresh clone.")
    lineage.add_argument("model", help="models:/<name>@<alias>, models:/<name>/<version>, or a task (its @champion)")
    lineage.add_argument("--json", action="store_true", help="print the lineage as JSON")
    lineage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    lineage.set_defaults(func=_lineage)

    compare = sub.add_parser("compare", help="the experiments' headline metrics, gate and changed params, per task",
                             description="Per task: the rows of `dvc exp show` (the workspace, the last commits and "
                             "their experiments) with the task's headline metrics and gate outcome as columns, then "
                             "only the params that differ between the rows; it fits the terminal's width. Every "
                             "column of one task: dvc exp show --drop '.*' --keep 'Experiment|reports/TASK/.*|tasks.TASK.*'.")
    compare.add_argument("tasks", nargs="*", metavar="TASK", help="tasks to show (default: all in params.yaml)")
    compare.add_argument("-n", "--num", type=int, default=1, metavar="N",
                         help="experiments of the last N commits (dvc exp show -n; default 1)")
    compare.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    compare.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, DataContractError, FileNotFoundError) as exc:
        from components.runtime.redact import redact

        print(f"cvops: error: {redact(str(exc))}", file=sys.stderr)
        # a missing file a flag or params.yaml names is the user's to fix, as a bad value is
        return CONFIG_ERROR if isinstance(exc, FileNotFoundError) else exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
