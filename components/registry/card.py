"""The model card of a registered version: the evaluation's card (metrics, fairness,
robustness, plots) with its gate-verdict section filled in, plus the version's lineage.

It is the version's description in the registry (the MLflow UI shows it) and is logged to the
training run as `model_card/v<version>.md`; the HTML card under reports/<task>/card/ is
re-rendered with the verdict. Without an evaluation card (e.g. a bare registration in
tests) the card holds the test metrics and the gate section only.
"""

from __future__ import annotations

from components.evaluation.card import write_card
from components.paths import StagePaths
from components.registry.gate import Candidate, Verdict


def gate_section(verdict: Verdict) -> str:
    against = (f"against champion v{verdict.champion} ({verdict.champion_source})" if verdict.champion
               else "cold start (no champion)")
    outcome = "**blessed** (promoted to @champion)" if verdict.passed else f"**not blessed**: {verdict.reason}"
    return f"## Promotion gate\n\n{outcome}; {against}.\n\n{verdict.table()}\n"


def model_card(c: Candidate, version: str, verdict: Verdict) -> str:
    lineage = "\n".join(f"| {k.removeprefix('cvops.')} | `{v}` |" for k, v in sorted(c.tags.items()) if v)
    header = (f"# {c.name} version {version}\n\nTask: {c.task}. MLflow run `{c.run_id}`. "
              f"Serve: `mlflow models serve -m models:/{c.name}/{version}`.\n\n")
    card_json = StagePaths(c.task).metrics.parent / "card" / "card.json"
    if card_json.exists():
        rendered = {**verdict.as_dict(), "version": version, "table": verdict.table()}  # the gate's one renderer
        markdown, _ = write_card(card_json, verdict=rendered)
        body = markdown.read_text()  # its "Gate verdict" section now holds this verdict
    else:
        metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(c.metrics.items()))
        body = f"## Test metrics\n\n| metric | value |\n|---|---|\n{metrics}\n\n{gate_section(verdict)}"
    return f"{header}{body}\n## Lineage\n\n| what | value |\n|---|---|\n{lineage}\n"
