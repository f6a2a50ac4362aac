"""The promotion matrix, per task, with the default gate of params.yaml, through the real
promote stage and a real MLflow registry (SQLite): a champion, then candidates (a) better
everywhere, (b) worse in the task metric, (c) worse in fairness, (d) worse in robustness,
(e) indistinguishable within the measured noise; each gets its verdict and the failing
check is named.

Which is real and which constructed: every candidate is a real registered model (the
configured arch, real pyfunc, real run) and its monitor's paired bootstrap runs on its real
test predictions against the champion's; its evaluation outputs (metrics.json) are
constructed, because on the tests' tiny data (~14 test images) the suite measures no
fairness groups and training a genuinely less fair or less robust model takes minutes. The
champion's side is its stored evaluation (same key), as the promote stage reuses it. The
candidates share the champion's weights, so the bootstrap has no spread and the reported
changes decide (random-weight models of other seeds predict one class alike on the tiny
split; tests/test_gate.py checks the interval's rule and the bootstrap itself).
"""

from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient

from components.config import GateConfig
from components.registry.record import read_record
from components.tasks import TASKS
from tests.conftest import ROOT
from tests.registry_helpers import (
    log_candidate,
    make_registry_workspace,
    promote_candidate,
    set_gate,
)


def default_gate(task: str) -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["tasks"][task]["gate"]


def champion_metrics(gate: GateConfig) -> dict[str, float]:
    """An evaluation that passes every floor and ceiling with room (0.1) on both sides."""
    out = {}
    for t in gate.thresholds:
        out[t.metric] = (t.min + 0.1) if t.min is not None else max(t.max - 0.1, 0.05)
    for c in gate.changes:
        out.setdefault(c.metric, 0.5)
    return out


def shifted(metrics: dict[str, float], gate: GateConfig, by: float, only: str | None = None) -> dict[str, float]:
    """Each change-checked metric moved by `by` tolerances of its change check, in its
    better direction (by < 0: worse), for `only` or for all."""
    out = dict(metrics)
    for c in gate.changes:
        if only is None or c.metric == only:
            step = by * abs(c.min_delta)
            out[c.metric] += step if c.direction == "higher" else -step
    return out


@pytest.mark.parametrize("task", list(TASKS))
def test_promotion_matrix_with_the_default_gate(task, tmp_path, monkeypatch):
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    raw = default_gate(task)
    set_gate(ws, task, raw)
    gate, monitor = GateConfig.model_validate(raw), TASKS[task].monitor
    fairness = "fairness/worst_group_gap"
    robustness = "robustness/retention"
    adversarial = next(c.metric for c in gate.changes if c.metric.startswith("adversarial/"))
    assert {monitor, fairness, robustness, adversarial} <= {c.metric for c in gate.changes}
    base = champion_metrics(gate)
    client = MlflowClient(f"sqlite:///{ws / 'mlruns.db'}")

    champion = promote_candidate(ws, task, log_candidate(ws, task, seed=0, metrics=base))
    assert champion["passed"] and champion["version"] == "1"

    def judge(metrics):
        return promote_candidate(ws, task, log_candidate(ws, task, seed=0, metrics=metrics))

    better = judge(shifted(base, gate, +1.5))  # (a) better in every change-checked metric
    assert better["passed"], better["table"]
    assert better["baseline_version"] == "1" and better["champion_source"].startswith("stored evaluation reused")
    monitor_check = next(c for c in better["checks"] if c["metric"] == monitor and c["interval"] is not None)
    assert monitor_check["interval"][0] > 0 and "paired-bootstrap" in monitor_check["rule"]
    base = shifted(base, gate, +1.5)  # v2 is champion now

    for metric in (monitor, fairness, robustness, adversarial):  # (b) task metric, (c) fairness, (d) robustness
        worse = judge(shifted(base, gate, -1.5, only=metric))
        assert not worse["passed"] and worse["reason"] == f"failed checks: {metric}", (metric, worse["table"])
        assert worse["champion"] == "2"
        failing = [c for c in worse["checks"] if not c["passed"]]
        assert [c["metric"] for c in failing] == [metric] and "**no**" in worse["table"]
        version = client.get_model_version(f"cvops-{task}", worse["version"])  # one rendering everywhere
        assert read_record(client, version)["cvops.gate.table"] == worse["table"] and worse["table"] in version.description

    same = judge(shifted(base, gate, -0.5))  # (e) worse in everything, but within the tolerance
    assert same["passed"], same["table"]
    assert same["champion"] == same["version"]


def test_champion_re_evaluated_when_the_evaluate_params_changed(tmp_path, monkeypatch):
    """A new evaluation key (here: robustness_images) means the stored evaluation is not
    comparable: the champion runs through the full suite on this test data, and the verdict
    says so (on tiny data its fairness groups are too small, so those checks fail closed)."""
    task = "classification"
    ws = make_registry_workspace(tmp_path, task, monkeypatch)
    raw = default_gate(task)
    set_gate(ws, task, raw)
    base = champion_metrics(GateConfig.model_validate(raw))
    assert promote_candidate(ws, task, log_candidate(ws, task, seed=0, metrics=base))["passed"]
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["tasks"][task]["evaluate"]["robustness_images"] = 8
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = promote_candidate(ws, task, log_candidate(ws, task, seed=0, metrics=base))
    assert again["champion_source"].startswith("re-evaluated by the full suite"), again["champion_source"]
    checks = {c["metric"]: c for c in again["checks"] if "change" in c["rule"]}
    assert checks["accuracy"]["baseline"] is not None and checks["robustness/retention"]["baseline"] is not None
    assert checks["fairness/worst_group_gap"]["baseline"] is None and not again["passed"]
    assert "re-evaluated" in again["table"]
