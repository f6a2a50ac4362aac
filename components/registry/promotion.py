"""Register a candidate and move the aliases, with compare-and-set on @champion.

The gate's change checks run against the champion as it was when the pipeline read it.
Under the registry lock the champion is read again: if it is still that version, the
aliases move; if another pipeline promoted meanwhile, the lock is released, the new
champion is re-evaluated and the gate runs again. So two pipelines that finish at once
never both become champion on verdicts against the same old champion, and every move is
in the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from components.config import GateConfig
from components.registry.audit import CHALLENGER, CHAMPION, alias_version, move_alias, registry_lock
from components.registry.card import model_card
from components.registry.gate import Candidate, Verdict, check_config, evaluate_gate

ChampionMetrics = Callable[[str], dict[str, float]]  # version -> its metrics on the same test data


@dataclass(frozen=True)
class Promotion:
    version: str
    verdict: Verdict
    previous_champion: str | None
    champion: str | None


def load_version(name: str, version: str):
    """The torch model (eval mode) and checkpoint metadata of a registered version, loaded
    through its pyfunc (the same code that serves it)."""
    wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    return wrapper.model, wrapper.meta


def champion_evaluator(name: str, data_dir: Path, batch_size: int, gate: GateConfig) -> ChampionMetrics:
    """Re-evaluates a champion version on `data_dir`'s test split with the evaluate stage's code."""
    from components.evaluation.suite import metrics_on_test_split

    def evaluate(version: str) -> dict[str, float]:
        if not gate.changes:  # nothing compares with the champion: skip the work
            return {}
        model, meta = load_version(name, version)
        try:
            return metrics_on_test_split(model, meta, data_dir, batch_size, f"models:/{name}/{version}")
        except ValueError as exc:  # a champion on other classes cannot be compared: its checks fail
            print(f"cvops: champion v{version} cannot be re-evaluated: {exc}")
            return {}

    return evaluate


def _verdict(gate: GateConfig, c: Candidate, champion: str | None, evaluate: ChampionMetrics) -> Verdict:
    return evaluate_gate(gate, c.metrics, c.task, evaluate(champion) if champion else None, champion)


def _tag_verdict(client: MlflowClient, c: Candidate, version: str, verdict: Verdict) -> None:
    client.set_model_version_tag(c.name, version, "cvops.gate.passed", str(verdict.passed).lower())
    client.set_model_version_tag(c.name, version, "cvops.gate.reason", verdict.reason)
    client.set_model_version_tag(c.name, version, "cvops.gate.baseline_version", verdict.champion or "")
    client.set_model_version_tag(c.name, version, "cvops.gate.checks", json.dumps(verdict.as_dict()["checks"]))
    card = model_card(c, version, verdict)
    client.update_model_version(c.name, version, description=card)
    client.log_text(c.run_id, card, f"model_card/v{version}.md")


def promote(client: MlflowClient, tracking_uri: str, gate: GateConfig, c: Candidate,
            evaluate_champion: ChampionMetrics) -> Promotion:
    """Register `c`, judge it, set @challenger, and @champion when it passes (see module doc)."""
    check_config(gate, c.task)  # a configuration error registers nothing
    against = alias_version(client, c.name, CHAMPION)
    verdict, version = _verdict(gate, c, against, evaluate_champion), None
    while True:
        with registry_lock(tracking_uri):
            if version is None:
                version = str(mlflow.register_model(c.model_uri, c.name, tags=c.tags).version)
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
