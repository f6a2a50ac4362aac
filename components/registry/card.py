"""The model card of a registered version (markdown): metrics, gate verdict and lineage.

It is the version's description in the registry (the MLflow UI shows it) and is logged to the
training run as `model_card/v<version>.md`. Richer evaluation sections (fairness,
robustness, plots) go before the gate section when the evaluation produces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.registry.gate import Verdict

if TYPE_CHECKING:
    from components.registry.promotion import Candidate


def gate_section(verdict: Verdict) -> str:
    against = f"against champion v{verdict.champion}" if verdict.champion else "cold start (no champion)"
    outcome = "**blessed** (promoted to @champion)" if verdict.passed else f"**not blessed**: {verdict.reason}"
    return f"## Promotion gate\n\n{outcome}; {against}.\n\n{verdict.table()}\n"


def model_card(c: Candidate, version: str, verdict: Verdict) -> str:
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(c.metrics.items()))
    lineage = "\n".join(f"| {k.removeprefix('cvops.')} | `{v}` |" for k, v in sorted(c.tags.items()) if v)
    return (
        f"# {c.name} version {version}\n\nTask: {c.task}. MLflow run `{c.run_id}`. "
        f"Serve: `mlflow models serve -m models:/{c.name}/{version}`.\n\n"
        f"## Test metrics\n\n| metric | value |\n|---|---|\n{metrics}\n\n"
        f"{gate_section(verdict)}\n## Lineage\n\n| what | value |\n|---|---|\n{lineage}\n"
    )
