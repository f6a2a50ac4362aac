"""The model card's export section: what can be deployed and what it costs.

Per format (eager FP32 torch, ONNX FP32, ONNX INT8): the task's monitor metric on the test
split and its drop against eager, FP32's output-level parity, CPU latency p50 / p95 per image
at batch 1 and at the serving batch, throughput, speedup over eager and file size; then
which formats the gate lets be served and, for a withheld one, the artifact rule it failed.

Rendered from the export stage's flat report (reports/<task>/export.json) and the gate's
verdict as card.json stores it; import-light (no torch), so the card renders anywhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

FORMATS = {"eager": "eager FP32 (torch)", "fp32": "ONNX FP32", "int8": "ONNX INT8"}
SERVED_AS = {"eager": "torch", "fp32": "onnx-fp32", "int8": "onnx-int8"}  # the gate's / `cvops predict --runtime` names


def _num(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _serving_batch(report: dict[str, float]) -> int | None:
    sizes = {int(m.group(1)) for k in report if (m := re.fullmatch(r"export/\w+/latency_b(\d+)_p50_ms", k))}
    return max((s for s in sizes if s != 1), default=None)


def render_export(report: dict[str, float] | None, verdict: dict[str, Any] | None, monitor: str) -> str:
    """The section's markdown body (no heading) from export.json's figures and the verdict."""
    if verdict is None:
        return "**PENDING**: the export stage runs after evaluate; the promote stage fills this in."
    if not report:
        return "Not exported: `tasks.<task>.export.enabled` is false (reports/<task>/export.json is empty)."
    if report.get("export/supported") == 0:
        return "Not exported: this architecture has no ONNX export path (the export stage's log says why)."
    formats = [f for f in FORMATS if f"export/{f}/latency_b1_p50_ms" in report]
    batch = _serving_batch(report)
    header = ["format", monitor, "drop", "max abs diff", "b1 p50 ms", "b1 p95 ms",
              *([f"b{batch} p50 ms", f"b{batch} p95 ms", f"b{batch} img/s"] if batch else []), "speedup", "size MB"]
    rows = []
    for f in formats:
        def get(name: str, f: str = f) -> float | None:
            return report.get(f"export/{f}/{name}")
        timing = ([_num(get(f"latency_b{batch}_p50_ms")), _num(get(f"latency_b{batch}_p95_ms")),
                   _num(get(f"b{batch}_images_per_s"), 1)] if batch else [])
        rows.append([FORMATS[f], _num(get(monitor), 4), "-" if f == "eager" else _num(get("drop"), 4),
                     "-" if f != "fp32" or get("max_abs_diff") is None else f"{get('max_abs_diff'):.1e}",
                     _num(get("latency_b1_p50_ms")), _num(get("latency_b1_p95_ms")),
                     *timing,
                     "1.00x" if f == "eager" else f"{_num(get('speedup'))}x", _num(get("size_mb"))])
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                       *("| " + " | ".join(r) + " |" for r in rows)])
    threads = report.get("export/threads")
    notes = [f"Latency: per image, after warm-up, {int(threads)} CPU thread(s) for every row"
             if threads else "Latency: per image, after warm-up, one fixed thread count for every row",
             "drop: eager minus exported on the test split, in the metric's unit; "
             "max abs diff: raw outputs of ONNX FP32 vs eager on a fixed test batch"]
    if "export/wall_s" in report:
        notes.append(f"export stage wall time {report['export/wall_s']:.0f} s (export and quantization {report.get('export/export_s', 0):.0f} s)")
    served = set(verdict.get("servable") or [])
    failed = {}
    for c in verdict.get("checks", []):
        fmt = c["metric"].split("/")[1] if c["metric"].startswith("export/") else None
        if fmt and not c["passed"]:
            failed.setdefault(SERVED_AS.get(fmt, fmt), []).append(f"`{c['metric']}` {_num(c.get('value'), 4)}, rule {c['rule']}")
    if not verdict.get("passed"):
        outcome = "**Nothing is served**: the model itself did not pass the gate."
    else:
        shown = [SERVED_AS[f] for f in formats if SERVED_AS[f] in served]
        outcome = f"**Servable**: {', '.join(f'`{s}`' for s in shown) or 'none'}."
        withheld = [SERVED_AS[f] for f in formats if SERVED_AS[f] not in served]
        for name in withheld:
            outcome += f"\n\n**Withheld** `{name}`: " + ("; ".join(failed.get(name, [])) or "no artifact rule passed it")
    return f"{outcome}\n\n{table}\n\n" + ".\n".join(notes) + "."


def export_card_section(card: dict[str, Any]) -> str:
    """The heading and body for card.json's card: export.json is read only once the verdict
    is in (promote runs after export; at evaluate time the export of this model is not done)."""
    from components.paths import StagePaths
    from components.tasks import MONITORS

    verdict, path = card.get("verdict"), StagePaths(card["task"]).export_report
    report = json.loads(path.read_text()) if verdict is not None and path.is_file() else None
    return "## Deployable artifacts (export)\n" + render_export(report, verdict, MONITORS[card["task"]]) + "\n"
