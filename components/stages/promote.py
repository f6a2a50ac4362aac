"""The promote stage: register the candidate, run the gate, move aliases.

Every candidate becomes a version of `cvops-<task>` with lineage and verdict tags, its model
card and the `@challenger` alias; only a blessed one moves `@champion` (compare-and-set, see
components/registry/promotion.py). The verdict is written to reports/<task>/gate.json (its
numbers to gate_metrics.json, the DVC metric) either way; a rejection is a result, not a crash, so DVC records it and does not register the same
candidate twice.
"""

from __future__ import annotations

import json

from mlflow import MlflowClient

from components.config import Params, params_hash
from components.evaluation.keys import evaluation_key, files_hash
from components.paths import StagePaths, write_metrics
from components.registry.gate import Verdict, check_config, gate_table
from components.registry.lineage import data_hash, lineage_tags
from components.registry.promotion import Candidate, champion_evaluator, promote
from components.runtime import tracking


def run(params: Params, task: str) -> Verdict:
    cfg, paths = params.task(task), StagePaths(task)
    check_config(cfg.gate, task)  # configuration errors before anything is read or registered
    metrics = json.loads(paths.metrics.read_text())
    if paths.export_report.is_file():  # the export stage's figures: what the gate's artifact rules judge
        metrics |= {k: v for k, v in json.loads(paths.export_report.read_text()).items() if isinstance(v, int | float)}
    run_info = json.loads(paths.run_info.read_text())
    tracking.training_run(params, paths.run_info)  # the candidate is registered from it
    tracking.setup(params, task)
    client, name = MlflowClient(), tracking.model_name(params, task)
    candidate = Candidate(task, name, run_info["model_uri"], run_info["run_id"], metrics,
                          lineage_tags(task, str(paths.data), params_hash(cfg), run_info["run_id"], params))
    key = evaluation_key(params, task, data_hash(f"prepare@{task}", str(paths.data)) or files_hash(paths.data))
    evaluate = champion_evaluator(params, task, candidate, key)
    result = promote(client, tracking.tracking_uri(params), cfg.gate, candidate, evaluate, key)
    verdict = result.verdict

    report = {**verdict.as_dict(), "model": name, "version": result.version,
              "previous_champion": result.previous_champion, "champion": result.champion, "run_id": run_info["run_id"],
              "evaluation_key": key}
    report["table"] = gate_table(report)
    paths.verdict.parent.mkdir(parents=True, exist_ok=True)
    paths.verdict.write_text(json.dumps(report, indent=2))
    versions = {k: int(report[k]) for k in ("version", "champion", "previous_champion") if str(report[k]).isdigit()}
    write_metrics(paths.gate_metrics, {"passed": verdict.passed, **versions,
                                       "failed_checks": sum(not c["passed"] for c in report["checks"])})
    status = (f"PROMOTED to {name}@champion" if verdict.passed
              else f"NOT promoted ({verdict.reason}); @champion stays {result.champion}")
    print(f"{name} version {result.version}: {status}\n{report['table']}")
    return verdict
