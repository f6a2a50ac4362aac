"""The promote stage: register the candidate, run the gate, move aliases.

Every candidate becomes a version of `cvops-<task>` with lineage and verdict tags and the
`@challenger` alias; only a blessed one moves `@champion`. The verdict is written to
reports/<task>/gate.json either way; a rejection is a result, not a crash, so DVC records
it and does not register the same candidate twice.
"""

from __future__ import annotations

import json

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components import tracking
from components.config import Params, params_hash
from components.paths import StagePaths
from components.registry.gate import Verdict, evaluate_gate
from components.registry.lineage import lineage_tags

CHAMPION, CHALLENGER = "champion", "challenger"


def current_champion(client: MlflowClient, name: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        return None


def run(params: Params, task: str) -> Verdict:
    cfg, paths = params.task(task), StagePaths(task)
    metrics = json.loads(paths.metrics.read_text())
    run_info = json.loads(paths.run_info.read_text())
    tracking.setup(params)
    client, name = MlflowClient(), tracking.model_name(params, task)

    champion = current_champion(client, name)
    verdict = evaluate_gate(cfg.gate, metrics, task, has_champion=champion is not None)  # config errors before registering

    version = mlflow.register_model(
        run_info["model_uri"], name,
        tags=lineage_tags(task, str(paths.data), params_hash(cfg), run_info["run_id"]),
    ).version
    client.set_model_version_tag(name, version, "cvops.gate.passed", str(verdict.passed).lower())
    client.set_model_version_tag(name, version, "cvops.gate.reason", verdict.reason)
    client.set_model_version_tag(name, version, "cvops.gate.checks", json.dumps(verdict.as_dict()["checks"]))
    client.set_registered_model_alias(name, CHALLENGER, version)
    if verdict.passed:
        client.set_registered_model_alias(name, CHAMPION, version)

    result = {**verdict.as_dict(), "model": name, "version": version, "previous_champion": champion,
              "champion": version if verdict.passed else champion, "run_id": run_info["run_id"]}
    paths.verdict.parent.mkdir(parents=True, exist_ok=True)
    paths.verdict.write_text(json.dumps(result, indent=2))
    status = f"PROMOTED to {name}@champion" if verdict.passed else f"NOT promoted ({verdict.reason}); @champion stays {champion}"
    print(f"{name} version {version}: {status}\n{verdict.table()}")
    return verdict
