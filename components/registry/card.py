"""The model card of a registered version: the evaluation's card (metrics, fairness,
robustness, figures) with its gate verdict filled in, plus the version's lineage.

`model_card` is the whole card, logged to the training run as `model_card/v<version>.md`;
`description` is the same card cut to what the version's description in the registry holds
(MLflow's column is 5000 characters: SQLite ignores that, PostgreSQL and MySQL refuse more),
the sections that do not fit named with a pointer to the whole card. Its first line is a
one-line summary, because the registered model's versions table shows only that line.

Figures are links to the run's artifacts through the MLflow server that shows the card
(`get-artifact?...`, relative, so any `--static-prefix` works): the UI's markdown sanitizer
(sanitize-html, http/https/ftp/mailto/tel only) drops `data:` images, checked in Chromium by
tests/test_orchestration.py. The HTML card under reports/<task>/card/ keeps them inline.
Without an evaluation card (a bare registration in tests) the card holds the test metrics
and the gate section only.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from components.evaluation import card as evaluation_card
from components.paths import StagePaths
from components.registry.gate import Candidate, Verdict

MAX_DESCRIPTION = 5000  # MLflow's model_versions.description: String(5000)


def artifact_link(run_id: str, path: str) -> str:
    """An artifact of a run as the MLflow UI's own server serves it (relative URL)."""
    return f"get-artifact?path={quote(path, safe='/')}&run_id={run_id}"


def figure_link(run_id: str):
    """The evaluate stage logs each figure as evaluation/<file name> in the training run."""
    return lambda path: artifact_link(run_id, f"evaluation/{Path(path).name}")


def summary_line(metrics: dict[str, float], verdict: Verdict) -> str:
    outcome = "PASSED" if verdict.passed else f"NOT PASSED ({verdict.reason})"
    headline = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if "/" not in k)
    return f"{outcome}: {headline}" if headline else outcome


def header_section(c: Candidate, version: str, verdict: Verdict, metrics: dict[str, float]) -> str:
    return (f"{summary_line(metrics, verdict)}\n\n# {c.name} version {version}\n\nTask: {c.task}. MLflow run `{c.run_id}`. "
            f"Serve: `mlflow models serve -m models:/{c.name}/{version}`. The whole card: the run's artifact "
            f"[model_card/v{version}.md]({artifact_link(c.run_id, f'model_card/v{version}.md')}).\n")


def gate_section(verdict: Verdict) -> str:
    against = (f"against champion v{verdict.champion} ({verdict.champion_source})" if verdict.champion
               else "cold start (no champion)")
    outcome = "**blessed** (promoted to `@champion`)" if verdict.passed else f"**not blessed**: {verdict.reason}"
    return f"## Promotion gate\n\n{outcome}; {against}.\n\n{verdict.table()}\n"


def lineage_section(c: Candidate) -> str:
    rows = "\n".join(f"| {k.removeprefix('cvops.')} | `{v}` |" for k, v in sorted(c.tags.items()) if v)
    return f"## Lineage\n\nAlso the version's record (`registry/v<N>.json` in its run); `cvops lineage models:/{c.name}/<version>` turns it into commands.\n\n| what | value |\n|---|---|\n{rows}\n"


def sections(c: Candidate, version: str, verdict: Verdict) -> list[str]:
    """The card's sections, top-down: header, the evaluation card's sections (verdict first,
    the config last), lineage."""
    card_json = StagePaths(c.task).metrics.parent / "card" / "card.json"
    if not card_json.exists():
        metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(c.metrics.items()))
        body = [f"## Test metrics\n\n| metric | value |\n|---|---|\n{metrics}\n", gate_section(verdict)]
        return [header_section(c, version, verdict, c.metrics), *body, lineage_section(c)]
    rendered = {**verdict.as_dict(), "version": version, "table": verdict.table()}  # the gate's one renderer
    evaluation_card.write_card(card_json, verdict=rendered)  # the reports/ card and card.json take the verdict too
    card = json.loads(card_json.read_text())
    link = figure_link(c.run_id)
    body = [section(card, link) for section in evaluation_card.SECTIONS if section is not evaluation_card.header_section]
    return [header_section(c, version, verdict, card["metrics"]), *body, lineage_section(c)]


def model_card(c: Candidate, version: str, verdict: Verdict) -> tuple[str, str]:
    """(the whole card, the registry description: the card within MAX_DESCRIPTION)."""
    parts = sections(c, version, verdict)
    return "\n".join(parts), description(parts, version)


ESSENTIAL = ("Gate verdict", "Headline metrics", "Per class", "Figures", "Test metrics", "Promotion gate")  # kept first


def description(parts: list[str], version: str, limit: int = MAX_DESCRIPTION) -> str:
    """The sections within `limit` characters, in the card's order: the header and ESSENTIAL
    ones first, then the others while they fit; those left out are named at the end with where
    to read them."""
    pointer = ("\n## Not shown here\n\n{names}: the description holds {limit} characters; the whole card is the "
               "run's artifact model_card/v{version}.md.\n")
    title = [p.split("\n", 1)[0].lstrip("# ") for p in parts]
    order = [0] + [i for i in range(1, len(parts)) if title[i].startswith(ESSENTIAL)] \
        + [i for i in range(1, len(parts)) if not title[i].startswith(ESSENTIAL)]
    kept, used = set(), len(pointer) + 200  # room for the names
    for i in order:
        if i == 0 or used + len(parts[i]) + 1 <= limit:
            kept.add(i)
            used += len(parts[i]) + 1
    text = "\n".join(parts[i] for i in sorted(kept))
    left_out = [title[i] for i in range(len(parts)) if i not in kept]
    if left_out:
        text += "\n" + pointer.format(names=", ".join(left_out), limit=limit, version=version)
    return text[:limit]
