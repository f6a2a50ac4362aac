"""Register a candidate and move the aliases, with compare-and-set on @champion.

The gate's change checks run against the champion as it was when the pipeline read it.
Under the registry lock the champion is read again: if it is still that version, the
aliases move; if another pipeline promoted meanwhile, the lock is released, the new
champion is measured and the gate runs again. So two pipelines that finish at once
never both become champion on verdicts against the same old champion, and every move is
in the audit trail.

The champion's side is measured as the candidate's was (champion_evaluator): its stored
evaluation when the evaluation key matches, else the full suite again; the monitor's change
gets a paired bootstrap over both models' predictions on the same test images.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import GateConfig, Params
from components.paths import StagePaths
from components.registry.audit import CHALLENGER, CHAMPION, alias_version, move_alias, registry_lock
from components.registry.card import model_card
from components.registry.gate import (
    Baseline,
    Candidate,
    Verdict,
    check_config,
    evaluate_gate,
    gate_table,
)
from components.registry.record import filter_tags, read_record, write_record
from components.runtime import tracking
from components.tasks import TASKS

ChampionEvaluator = Callable[[str], Baseline]  # version -> its evaluation on the same test data
EVALUATION_TAG = "cvops.evaluation.key"  # the key its stored evaluation was measured under (in its record)
EVALUATION_ARTIFACT = "gate/evaluation.json"  # that evaluation (metrics.json), in its run


@dataclass(frozen=True)
class Promotion:
    version: str
    verdict: Verdict
    previous_champion: str | None
    champion: str | None


def load_version(name: str, version: str):
    """The torch model (eval mode) and checkpoint metadata of a registered version, loaded
    through its pyfunc (the same code that serves it)."""
    return load_uri(f"models:/{name}/{version}")


def load_uri(uri: str):
    wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    return wrapper.model, wrapper.meta


def stored_evaluation(client: MlflowClient, name: str, version: str, key: str) -> dict[str, float] | None:
    """The version's evaluation as stored at its promotion, if measured under `key`."""
    if not key or stored_key(client, name, version) != key:
        return None
    mv = client.get_model_version(name, version)
    try:
        return json.loads(tracking.read_artifact_text(client, mv.run_id, EVALUATION_ARTIFACT))
    except (MlflowException, OSError, ValueError):
        return None


def stored_key(client: MlflowClient, name: str, version: str) -> str:
    return read_record(client, client.get_model_version(name, version)).get(EVALUATION_TAG, "")


def champion_evaluator(params: Params, task: str, c: Candidate, key: str) -> ChampionEvaluator:
    """Measures a champion version as the evaluate stage measured the candidate: its stored
    evaluation when it was made under the same key (test data, evaluate params, evaluation
    code), else the full suite (task metrics, fairness, robustness) on `data_dir`'s test split;
    and the paired bootstrap of the monitor metric from both models' test predictions."""
    from components.evaluation import suite

    cfg, data_dir, client = params.task(task), StagePaths(task).data, MlflowClient()
    candidate_preds: list = []  # computed once, on first use

    def evaluate(version: str) -> Baseline:
        if not cfg.gate.changes:  # nothing compares with the champion: skip the work
            return Baseline({}, "not measured (no change checks)")
        model, meta = load_version(c.name, version)
        try:
            data = suite.load_test_split(meta, data_dir, cfg.train.batch_size, f"models:/{c.name}/{version}")
        except ValueError as exc:  # a champion on other classes cannot be compared: its checks fail
            print(f"cvops: champion v{version} cannot be re-evaluated: {exc}")
            return Baseline({}, f"cannot be evaluated on this test data: {exc}")
        metrics = stored_evaluation(client, c.name, version, key)
        if metrics is not None:
            source = f"stored evaluation reused (same test data, evaluate params and code: key {key})"
        else:
            metrics = suite.run_suite(params, task, model, data)["metrics"]
            source = f"re-evaluated by the full suite on this test data (stored key {stored_key(client, c.name, version) or 'none'} != {key or 'none'})"
        if not candidate_preds:
            candidate_preds.append(suite.split_predictions(load_uri(c.model_uri)[0], data, cfg.train.batch_size))
        (preds, targets), (champion_preds, _) = candidate_preds[0], suite.split_predictions(model, data, cfg.train.batch_size)
        b = cfg.gate.bootstrap
        paired = suite.paired_bootstrap(data.spec, data.classes, preds, champion_preds, targets, b.samples, b.confidence, params.seed)
        return Baseline(metrics, source, paired)

    return evaluate


def _verdict(gate: GateConfig, c: Candidate, champion: str | None, evaluate: ChampionEvaluator) -> Verdict:
    return evaluate_gate(gate, c.metrics, c.task, evaluate(champion) if champion else None, champion, TASKS[c.task].monitor)


def _tag_verdict(client: MlflowClient, c: Candidate, version: str, verdict: Verdict) -> None:
    """The verdict into the version's record (passed and servable also as tags)."""
    write_record(client, c.name, version, {
        "cvops.gate.passed": str(verdict.passed).lower(), "cvops.gate.reason": verdict.reason,
        "cvops.gate.baseline_version": verdict.champion or "", "cvops.gate.checks": json.dumps(verdict.as_dict()["checks"]),
        "cvops.gate.champion_source": verdict.champion_source, "cvops.servable": ",".join(verdict.servable),
        "cvops.gate.table": gate_table(verdict.as_dict())})
    card, description = model_card(c, version, verdict)
    client.update_model_version(c.name, version, description=description)  # the card cut to the registry's limit
    client.log_text(c.run_id, card, f"model_card/v{version}.md")


def store_evaluation(client: MlflowClient, c: Candidate, version: str, key: str) -> None:
    """Keep the candidate's evaluation with its version, so that as champion it is reused;
    its lineage and the evaluation's key go into the version's record."""
    client.log_text(c.run_id, json.dumps(c.metrics, indent=2, sort_keys=True), EVALUATION_ARTIFACT)
    write_record(client, c.name, version, {**c.tags, EVALUATION_TAG: key})


def promote(client: MlflowClient, tracking_uri: str, gate: GateConfig, c: Candidate,
            evaluate_champion: ChampionEvaluator, evaluation_key: str = "") -> Promotion:
    """Register `c`, judge it, set @challenger, and @champion when it passes (see module doc)."""
    check_config(gate, c.task)  # a configuration error registers nothing
    against = alias_version(client, c.name, CHAMPION)
    verdict, version = _verdict(gate, c, against, evaluate_champion), None
    while True:
        with registry_lock(tracking_uri):
            if version is None:
                version = str(mlflow.register_model(c.model_uri, c.name, tags=filter_tags(c.tags)).version)
                store_evaluation(client, c, version, evaluation_key)
            current = alias_version(client, c.name, CHAMPION)
            if current == against:  # compare-and-set: the verdict is against today's champion
                _tag_verdict(client, c, version, verdict)
                outcome = "passed" if verdict.passed else "failed"
                move_alias(client, c.name, CHALLENGER, version, "register", outcome, verdict.reason)
                if verdict.passed:
                    move_alias(client, c.name, CHAMPION, version, "promote", outcome, verdict.reason)
                return Promotion(version, verdict, current, version if verdict.passed else current)
        print(f"cvops: {c.name}@champion moved from v{against} to v{current} during evaluation; re-running the gate")
        against = current
        verdict = _verdict(gate, c, against, evaluate_champion)
