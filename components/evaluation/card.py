"""The model card: one markdown file and one self-contained HTML page (images inlined) from
a JSON document of everything the evaluate stage measured.

`write_card` renders card.json -> model_card.md / model_card.html. The promote stage calls it
again with the gate verdict to fill in that section; until then the verdict reads 'pending'.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from components.serving.report import export_card_section

ImageRef = Callable[[str], str]  # a figure's path (relative to the repo root) -> its link in the card
Section = Callable[[dict[str, Any], ImageRef], str]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("n/a" if v is None else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _fairness(f: dict[str, Any]) -> str:
    if f.get("status") == "no_sensitive_attribute":
        return "The dataset has no sensitive attribute (`group` is empty): no per-group evaluation."
    rows = [[r["group"], r["n"], r["status"], r["value"], *(r["ci"] or [None, None])] for r in f["groups"]]
    text = _table(["group", "images", "status", f["metric"], "95% CI low", "95% CI high"], rows)
    if f.get("status") == "ok":
        gap, ratio = f["worst_group_gap_ci"], f["min_max_ratio_ci"]
        text += (f"\n\nWorst group **{f['worst_group']}**; gap {f['worst_group_gap']:.4f} (95% CI {gap[0]:.4f}-{gap[1]:.4f}); "
                 f"min/max ratio {f['min_max_ratio']:.4f} (95% CI {ratio[0]:.4f}-{ratio[1]:.4f}).")
        for key in ("demographic_parity_difference", "equalized_odds_difference"):
            if key in f:
                text += f"\n{key.replace('_', ' ')}: {f[key]:.4f}."
    else:
        text += f"\n\nNo gap computed: {f.get('status')}."
    return text


def _robustness(c: dict[str, Any], a: dict[str, Any]) -> str:
    """Corruptions: the metric at each severity with that severity's value in the
    corruption's own unit (params.yaml evaluate.corruptions), then the attacks per eps."""
    names = list(dict.fromkeys(r["corruption"] for r in c["rows"]))
    by = {(r["corruption"], r["severity"]): r for r in c["rows"]}
    severities = sorted({r["severity"] for r in c["rows"]})
    rows = [[n, *(f"{by[(n, s)]['value']:.4f} ({by[(n, s)]['level']:g})" if (n, s) in by else "n/a" for s in severities)] for n in names]
    text = _table(["corruption", *(f"severity {s}" for s in severities)], rows)
    text += ("\n\nEach cell: the metric (the severity's value: noise std, blur sigma, factor, JPEG quality, "
             f"degrees, ...). Measured on the robustness subsample, whose clean score is {c['clean']:.4f}; "
             f"mean corrupted {c['mean']:.4f}; retention {c['retention']:.4f}")
    text += f"; mCE vs champion {c['mce']:.4f}." if c.get("mce") is not None else "; no champion to compute mCE against."
    eps = sorted({r["eps"] for r in a["rows"]})
    by_attack = {n: {r["eps"]: r["value"] for r in a["rows"] if r["attack"] == n} for n in dict.fromkeys(r["attack"] for r in a["rows"])}
    text += "\n\n" + _table(["attack", *(f"eps {e:g}" for e in eps)], [[n.upper(), *(c.get(e) for e in eps)] for n, c in by_attack.items()])
    return text


def _verdict(v: dict[str, Any] | None) -> str:
    """The verdict's outcome and the gate's own table (rendered by the registry, which fills
    the verdict in: this layer does not import it)."""
    if v is None:
        return "**PENDING**: the promote stage fills this in."
    lines = [f"**{'PASSED' if v.get('passed') else 'NOT PASSED'}**: {v.get('reason', '')}"]
    if v.get("table"):
        lines.append(v["table"])
    return "\n\n".join(lines)


def per_class(metrics: dict[str, float], classes: list[str]) -> dict[str, dict[str, float]]:
    """{metric: {class: value}} of the per-class metrics (recall/<class>, ap/<class>, ...)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        metric, _, name = key.rpartition("/")
        if metric and "/" not in metric and name in classes:
            out.setdefault(metric, {})[name] = value
    return out


def _per_class(table: dict[str, dict[str, float]], classes: list[str]) -> str:
    if not table:
        return "No per-class metrics for this task."
    shown = [c for c in classes if any(c in v for v in table.values())]
    return _table(["class", *table], [[c, *(table[m].get(c) for m in table)] for c in shown])


# One function per section, in the order a reviewer reads: the outcome and the numbers that
# decide it first, then where the model is weak, the pictures, and the data and config last.
def header_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return (f"# Model card: {card['model_name']}\n\nTask **{card['task']}**, arch `{card['arch']}`, classes "
            f"{', '.join(card['classes'])}; evaluated {card['date']}.\n")


def verdict_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return f"## Gate verdict\n\n{_verdict(card.get('verdict'))}\n"


def export_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return export_card_section(card)


def headline_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    rows = [[f"`{k}`", v] for k, v in card["metrics"].items()]
    return f"## Headline metrics (test split)\n\n{_table(['metric', 'value'], rows)}\n"


def per_class_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return f"## Per class\n\n{_per_class(card.get('per_class', {}), card['classes'])}\n"


def fairness_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return f"## Fairness\n\n{_fairness(card['fairness'])}\n"


def robustness_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return f"## Robustness\n\n{_robustness(card['corruptions'], card['adversarial'])}\n"


def figures_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    figures = [f"### {name.replace('_', ' ')}\n\n![{name}]({image_ref(path)})\n" for name, path in card["plots"].items()]
    return "\n".join(["## Figures\n", *figures])


def data_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    d = card["data"]
    return (f"## Data\n\nDataset `{d['path']}`, version (DVC md5) `{d['version'] or 'untracked'}`, "
            f"test images {d['test_images']}.\n")


def config_section(card: dict[str, Any], image_ref: ImageRef) -> str:
    return f"## Training config\n\n```json\n{json.dumps(card['config'], indent=2)}\n```\n"


SECTIONS: tuple[Section, ...] = (header_section, verdict_section, headline_section, per_class_section, fairness_section,
                                 robustness_section, export_section, figures_section, data_section, config_section)


def to_markdown(card: dict[str, Any], image_ref: ImageRef = lambda p: p, sections: tuple[Section, ...] = SECTIONS) -> str:
    """The card top-down (SECTIONS); `image_ref` turns a figure's repo path into its link."""
    return "\n".join(section(card, image_ref) for section in sections)


def _inline(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"data:image/png;base64,{data}"


def _to_html(markdown: str, title: str) -> str:
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{body}</body></html>"


def write_card(card_json: Path, verdict: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """(Re)render model_card.md and model_card.html next to card.json; a verdict given here
    is stored in card.json too. Plot paths in card.json are relative to the repo root."""
    card = json.loads(card_json.read_text())
    if verdict is not None:
        card["verdict"] = verdict
        card_json.write_text(json.dumps(card, indent=2))
    md_path, html_path = card_json.with_name("model_card.md"), card_json.with_name("model_card.html")
    md_path.write_text(to_markdown(card, image_ref=lambda p: os.path.relpath(p, card_json.parent)))
    html_path.write_text(_to_html(to_markdown(card, image_ref=_inline), card["model_name"]))
    return md_path, html_path
