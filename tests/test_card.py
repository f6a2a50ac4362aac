"""The registered version's description: the card cut to MLflow's 5000 characters, the
summary line first, the essential sections kept, the rest named (pure functions, no store)."""

from __future__ import annotations

from components.registry.card import MAX_DESCRIPTION, artifact_link, description, figure_link


def test_description_keeps_the_essentials_within_mlflows_limit():
    parts = ["PASSED: accuracy 0.9600\n\n# cvops-classification version 3\n", "## Gate verdict\n\nok\n",
             "## Headline metrics (test split)\n\n| accuracy | 0.96 |\n", "## Per class\n\n| a | 0.9 |\n",
             "## Fairness\n\n" + "f" * 1500, "## Robustness\n\n" + "r" * 3000, "## Figures\n\n![fairness](x)\n",
             "## Data\n\nd\n", "## Training config\n\n" + "c" * 900, "## Lineage\n\n" + "l" * 3700]
    text = description(parts, "3")
    assert len(text) <= MAX_DESCRIPTION and text.startswith("PASSED: accuracy 0.9600\n")
    for kept in ("## Gate verdict", "## Headline metrics", "## Per class", "## Figures", "## Fairness", "## Data", "## Training config"):
        assert kept in text, kept
    assert "## Robustness" not in text and "## Lineage\n" not in text
    assert "Robustness, Lineage: the description holds 5000 characters" in text
    assert "model_card/v3.md" in text
    order = [text.index(h) for h in ("## Gate verdict", "## Fairness", "## Figures", "## Data", "## Not shown here")]
    assert order == sorted(order), "the card's order, whatever was left out"
    assert description(parts[:4], "3") == "\n".join(parts[:4]), "a card that fits is whole"


def test_figures_are_relative_links_to_the_run_artifacts():
    # relative: resolved against the MLflow UI's own address (any --static-prefix); data: URIs are dropped by its sanitizer
    assert artifact_link("abc", "evaluation/a b.png") == "get-artifact?path=evaluation/a%20b.png&run_id=abc"
    assert figure_link("abc")("reports/classification/evaluation/fairness.png") == "get-artifact?path=evaluation/fairness.png&run_id=abc"
