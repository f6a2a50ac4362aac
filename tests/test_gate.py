"""The promotion gate fails closed: no thresholds is an error, a missing metric fails; the
monitor's change is decided on a paired bootstrap; gate metric names are checked at load."""

from pathlib import Path

import pytest

from components.config import ChangeThreshold, ConfigError, GateConfig, Threshold
from components.registry.gate import Baseline, evaluate_gate

METRICS = {"accuracy": 0.93, "ece": 0.04}


def gate(*thresholds: Threshold, cold_start: str = "promote", changes: tuple = ()) -> GateConfig:
    return GateConfig(thresholds=list(thresholds), cold_start=cold_start, changes=list(changes))


def test_no_thresholds_is_a_configuration_error_not_a_pass():
    with pytest.raises(ConfigError, match="tasks.classification.gate.thresholds is empty"):
        evaluate_gate(gate(), METRICS, "classification", champion=None)


def test_min_and_max_bounds():
    verdict = evaluate_gate(gate(Threshold(metric="accuracy", min=0.9), Threshold(metric="ece", max=0.05)),
                            METRICS, "classification", champion=METRICS)
    assert verdict.passed and [c.passed for c in verdict.checks] == [True, True]
    verdict = evaluate_gate(gate(Threshold(metric="accuracy", min=0.95)), METRICS, "classification", champion=METRICS)
    assert not verdict.passed and verdict.reason == "failed checks: accuracy"


def test_missing_metric_fails_its_check_and_names_the_available_ones():
    verdict = evaluate_gate(gate(Threshold(metric="mAP50", min=0.5)), METRICS, "classification", champion=METRICS)
    assert not verdict.passed
    assert verdict.checks[0].value is None and "accuracy" in verdict.checks[0].note
    assert "| mAP50 | >= 0.5 | - | missing | - | **no** |" in verdict.table()


def test_cold_start_refuse_blocks_the_first_candidate_only():
    refuse = gate(Threshold(metric="accuracy", min=0.5), cold_start="refuse")
    assert not evaluate_gate(refuse, METRICS, "classification", champion=None).passed
    assert evaluate_gate(refuse, METRICS, "classification", champion=METRICS).passed


def test_threshold_needs_a_bound():
    with pytest.raises(ValueError, match="needs 'min' or 'max'"):
        Threshold(metric="accuracy")


def test_change_thresholds_against_the_champion_by_direction():
    champion = {"accuracy": 0.90, "ece": 0.06}
    changes = (ChangeThreshold(metric="accuracy", direction="higher", min_delta=0.02),
               ChangeThreshold(metric="ece", direction="lower", min_relative_delta=0.10))
    g = gate(Threshold(metric="accuracy", min=0.5), changes=changes)
    verdict = evaluate_gate(g, METRICS, "classification", champion=champion, champion_version="3")
    # accuracy +0.03 >= +0.02; ece 0.06 -> 0.04 is a 33% improvement (lower is better) >= 10%
    assert verdict.passed and verdict.champion == "3"
    assert [c.baseline for c in verdict.checks] == [None, 0.90, 0.06]
    worse = evaluate_gate(g, {"accuracy": 0.91, "ece": 0.059}, "classification", champion=champion)
    assert not worse.passed and worse.reason == "failed checks: accuracy, ece"
    assert "| accuracy | change (higher) >= +0.02 | 0.9000 | 0.9100 | - | **no** |" in worse.table()


def test_negative_min_delta_is_a_tolerated_regression():
    g = gate(Threshold(metric="accuracy", min=0.5),
             changes=(ChangeThreshold(metric="accuracy", direction="higher", min_delta=-0.01),))
    assert evaluate_gate(g, {"accuracy": 0.895}, "classification", champion={"accuracy": 0.90}).passed
    assert not evaluate_gate(g, {"accuracy": 0.885}, "classification", champion={"accuracy": 0.90}).passed


def test_change_check_fails_when_the_champion_lacks_the_metric():
    g = gate(Threshold(metric="accuracy", min=0.5),
             changes=(ChangeThreshold(metric="macro_f1", direction="higher", min_delta=0.0),))
    verdict = evaluate_gate(g, {"accuracy": 0.9, "macro_f1": 0.9}, "classification", champion={"accuracy": 0.9})
    assert not verdict.passed and "champion" in verdict.checks[1].note


def test_cold_start_runs_value_thresholds_only():
    g = gate(Threshold(metric="accuracy", min=0.5),
             changes=(ChangeThreshold(metric="accuracy", direction="higher", min_delta=0.5),))
    verdict = evaluate_gate(g, METRICS, "classification", champion=None)
    assert verdict.passed and [c.metric for c in verdict.checks] == ["accuracy"]


def test_change_thresholds_alone_need_cold_start_refuse():
    only_changes = (ChangeThreshold(metric="accuracy", direction="higher", min_delta=0.0),)
    with pytest.raises(ConfigError, match="no value thresholds"):
        evaluate_gate(gate(changes=only_changes), METRICS, "classification", champion=METRICS)
    assert evaluate_gate(gate(changes=only_changes, cold_start="refuse"), METRICS, "classification", champion=METRICS).passed


def test_change_threshold_needs_a_bound():
    with pytest.raises(ValueError, match="needs 'min_delta' or 'min_relative_delta'"):
        ChangeThreshold(metric="accuracy", direction="higher")


# ---- the paired bootstrap decides the monitor's change check ----------------------------------

def paired(difference: float, low: float, high: float) -> dict:
    return {"difference": difference, "low": low, "high": high, "samples": 1000, "confidence": 0.95, "images": 300}


def monitor_gate(tolerance: float) -> GateConfig:
    return gate(Threshold(metric="accuracy", min=0.5),
                changes=(ChangeThreshold(metric="accuracy", direction="higher", min_delta=-tolerance),))


def test_bootstrap_refuses_when_the_interval_reaches_beyond_the_tolerance():
    champion = Baseline({"accuracy": 0.90}, "re-evaluated", paired(-0.005, -0.03, 0.02))
    # the point change -0.005 is within the 0.01 tolerance, but the interval's worse end is not
    verdict = evaluate_gate(monitor_gate(0.01), {"accuracy": 0.895}, "classification", champion, "1", monitor="accuracy")
    check = verdict.checks[1]
    assert not verdict.passed and verdict.reason == "failed checks: accuracy"
    assert check.interval == pytest.approx([-0.03, 0.02]) and "paired-bootstrap" in check.rule
    assert "[-0.0300, +0.0200]" in verdict.table() and "re-evaluated" in verdict.table()
    # a tighter interval around the same change passes
    tight = Baseline({"accuracy": 0.90}, "re-evaluated", paired(-0.005, -0.009, -0.001))
    assert evaluate_gate(monitor_gate(0.01), {"accuracy": 0.895}, "classification", tight, "1", monitor="accuracy").passed


def test_bootstrap_interval_follows_the_reported_change_and_the_direction():
    # resamples measured on the predictions; the interval is centred on metrics.json's change
    champion = Baseline({"ece": 0.05}, "stored", paired(0.01, 0.0, 0.02))
    g = gate(Threshold(metric="ece", max=0.5), changes=(ChangeThreshold(metric="ece", direction="lower", min_delta=-0.02),))
    check = evaluate_gate(g, {"ece": 0.06}, "classification", champion, "1", monitor="ece").checks[1]
    # lower is better: ece +0.01 is a change of -0.01, resampled spread +-0.01
    assert check.interval == pytest.approx([-0.02, 0.0]) and check.passed


def test_bootstrap_applies_to_the_monitor_only():
    champion = Baseline({"accuracy": 0.90, "ece": 0.05}, "stored", paired(0.0, -0.5, 0.5))
    g = gate(Threshold(metric="accuracy", min=0.5), changes=(ChangeThreshold(metric="ece", direction="lower", min_delta=-0.02),))
    verdict = evaluate_gate(g, {"accuracy": 0.9, "ece": 0.05}, "classification", champion, "1", monitor="accuracy")
    assert verdict.passed and verdict.checks[1].interval is None


def test_paired_bootstrap_against_a_direct_resampling():
    """suite.paired_bootstrap on classification predictions vs numpy resampling written here."""
    import numpy as np
    import torch

    from components.evaluation.suite import paired_bootstrap
    from components.tasks import TASKS

    rng = np.random.default_rng(1)
    targets = torch.tensor(rng.integers(0, 3, 400))
    a = torch.nn.functional.one_hot(torch.where(torch.tensor(rng.random(400) < 0.9), targets, (targets + 1) % 3), 3).float()
    b = torch.nn.functional.one_hot(torch.where(torch.tensor(rng.random(400) < 0.8), targets, (targets + 1) % 3), 3).float()
    out = paired_bootstrap(TASKS["classification"], ["a", "b", "c"], a, b, targets, 2000, 0.95, 0)
    ca, cb = (a.argmax(1) == targets).numpy(), (b.argmax(1) == targets).numpy()
    assert out["difference"] == pytest.approx(ca.mean() - cb.mean())
    idx = np.random.default_rng(7).integers(0, 400, (4000, 400))
    ref = np.quantile(ca[idx].mean(1) - cb[idx].mean(1), [0.025, 0.975])
    assert out["low"] == pytest.approx(ref[0], abs=0.01) and out["high"] == pytest.approx(ref[1], abs=0.01)
    same = paired_bootstrap(TASKS["classification"], ["a", "b", "c"], a, a, targets, 200, 0.95, 0)
    assert same["low"] == same["high"] == same["difference"] == 0.0  # paired: a model against itself has no noise


# ---- typos are caught when params are loaded ----------------------------------------------------

def test_gate_metric_typo_fails_at_load_with_a_suggestion(tmp_path):
    import subprocess
    import sys

    import yaml

    from components.config import PARAMS_FILE, load_params, parse_params
    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / PARAMS_FILE).read_text())
    load_params(ROOT / PARAMS_FILE)  # the defaults name only metrics the evaluation produces
    raw["tasks"]["detection"]["gate"]["changes"][1]["metric"] = "fairness/worst_grup_gap"
    with pytest.raises(ConfigError, match=r"tasks.detection.gate: metric 'fairness/worst_grup_gap' .* did you mean 'fairness/worst_group_gap'"):
        parse_params(raw)
    raw["tasks"]["detection"]["gate"]["changes"][1]["metric"] = "ap/circle"  # per-class: data-dependent suffix
    parse_params(raw)
    raw["tasks"]["segmentation"]["gate"]["thresholds"][0]["metric"] = "adversarial/pgd_miou@0.03"  # not an eps evaluated
    with pytest.raises(ConfigError, match="did you mean 'adversarial/pgd_miou@0.04'"):
        parse_params(raw)
    (tmp_path / PARAMS_FILE).write_text(yaml.safe_dump(raw))  # the first stage `dvc repro` runs: exit 2, no traceback
    result = subprocess.run([str(Path(sys.executable).parent / "cvops"), "stage", "prepare", "--task", "segmentation"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "did you mean 'adversarial/pgd_miou@0.04'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_artifact_rule_withholds_that_format_not_the_model():
    gate = GateConfig(thresholds=[Threshold(metric="accuracy", min=0.9)],
                      servable=[Threshold(metric="export/int8/drop", max=0.005), Threshold(metric="export/fp32/drop", max=0.005)])
    exported = {"accuracy": 0.95, "export/fp32/drop": 0.0, "export/int8/drop": 0.02}
    verdict = evaluate_gate(gate, exported, "classification")
    assert verdict.passed and verdict.servable == ("torch", "onnx-fp32")  # INT8 lost 2 points: not shipped
    assert "not servable: onnx-int8 (export/int8/drop)" in verdict.reason
    assert evaluate_gate(gate, {**exported, "export/int8/drop": 0.001}, "classification").servable == ("torch", "onnx-fp32", "onnx-int8")
    assert evaluate_gate(gate, {"accuracy": 0.95}, "classification").servable == ("torch",)  # nothing exported
    refused = evaluate_gate(gate, {**exported, "accuracy": 0.5}, "classification")
    assert not refused.passed and refused.servable == () and "accuracy" in refused.reason and "int8" not in refused.reason
