"""The promotion gate fails closed: no thresholds is an error, a missing metric fails."""

import pytest

from components.config import ChangeThreshold, ConfigError, GateConfig, Threshold
from components.registry.gate import evaluate_gate

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
    assert "| mAP50 | >= 0.5 | - | missing | **no** |" in verdict.table()


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
    assert "| accuracy | change (higher) >= +0.02 | 0.9000 | 0.9100 | **no** |" in worse.table()


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
