"""The metrics.json names the evaluation suite (components/evaluation/suite.py run_suite) can
write for a task: what a gate may check. Import-light (the per-task names are the task
registry's import-free tables), so that params validation (components/config.py) uses it
before anything heavy is loaded; kept next to the suite
so that both change together (tests/test_gate_names.py checks it against a real evaluation).
"""

from __future__ import annotations

from components.tasks import METRICS, PER_CLASS


def metric_names(task: str, monitor: str, ev) -> tuple[set[str], tuple[str, ...]]:
    """(names, prefixes): the metrics.json keys `run_suite` can produce for a task with
    evaluate config `ev`, and the prefixes of the per-class / per-group ones whose suffix
    depends on the data. Kept next to run_suite so that both change together."""
    names = set(METRICS.get(task, ())) | {monitor}
    names |= {"fairness/worst_group_gap", "fairness/worst_group_gap_ci_high", "fairness/min_max_ratio",
              "fairness/min_max_ratio_ci_low", "fairness/demographic_parity_difference",
              "fairness/equalized_odds_difference"}
    names |= {f"robustness/mean_corruption_{monitor}", "robustness/retention", "robustness/mce"}
    names |= {f"robustness/{n}_error" for n in ev.corruptions}
    names |= {f"adversarial/{attack}_{monitor}@{eps:g}" for attack in ("fgsm", "pgd") for eps in ev.eps}
    names |= {f"export/{fmt}/{m}" for fmt in ("fp32", "int8") for m in ("drop", "speedup", monitor)} | {"export/fp32/max_abs_diff"}
    return names, (PER_CLASS.get(task, ""), f"fairness/{monitor}/", "export/")  # export/: the export stage's figures
