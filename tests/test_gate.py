"""The promotion gate fails closed: no thresholds is an error, a missing metric fails."""

import pytest

from components.config import ConfigError, GateConfig, Threshold
from components.registry.gate import evaluate_gate

METRICS = {"accuracy": 0.93, "ece": 0.04}


def gate(*thresholds: Threshold, cold_start: str = "promote") -> GateConfig:
    return GateConfig(thresholds=list(thresholds), cold_start=cold_start)


def test_no_thresholds_is_a_configuration_error_not_a_pass():
    with pytest.raises(ConfigError, match="tasks.classification.gate.thresholds is empty"):
        evaluate_gate(gate(), METRICS, "classification", has_champion=False)


def test_min_and_max_bounds():
    verdict = evaluate_gate(gate(Threshold(metric="accuracy", min=0.9), Threshold(metric="ece", max=0.05)),
                            METRICS, "classification", has_champion=True)
    assert verdict.passed and [c.passed for c in verdict.checks] == [True, True]
    verdict = evaluate_gate(gate(Threshold(metric="accuracy", min=0.95)), METRICS, "classification", has_champion=True)
    assert not verdict.passed and verdict.reason == "failed checks: accuracy"


def test_missing_metric_fails_its_check_and_names_the_available_ones():
    verdict = evaluate_gate(gate(Threshold(metric="mAP50", min=0.5)), METRICS, "classification", has_champion=True)
    assert not verdict.passed
    assert verdict.checks[0].value is None and "accuracy" in verdict.checks[0].note
    assert "| mAP50 | >= 0.5 | missing | **no** |" in verdict.table()


def test_cold_start_refuse_blocks_the_first_candidate_only():
    refuse = gate(Threshold(metric="accuracy", min=0.5), cold_start="refuse")
    assert not evaluate_gate(refuse, METRICS, "classification", has_champion=False).passed
    assert evaluate_gate(refuse, METRICS, "classification", has_champion=True).passed


def test_threshold_needs_a_bound():
    with pytest.raises(ValueError, match="needs 'min' or 'max'"):
        Threshold(metric="accuracy")
