"""`cvops compare`: one task's experiments as a table that fits a terminal.

`dvc exp show` puts every metric of every task and every param in one row (hundreds of
columns of "…"). This reads the same rows (`dvc exp show --json`, whose metrics stay grouped by
file; the flat table of dvc.api.exp_show drops the file from a name that only one file has)
and shows, per task, its headline metrics (the task registry's import-free METRICS) and the
gate's outcome as columns, and below them only the params that differ between the rows,
wrapped to the width.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from typing import Any

from components.paths import StagePaths
from components.tasks import METRICS

MISSING = "-"


def terminal_width() -> int:
    return max(60, shutil.get_terminal_size((100, 24)).columns)


def _metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else MISSING


def _value(value: Any) -> str:
    """A param as params.yaml would spell it (DVC hands numbers back as floats: 5.0 is 5)."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _row(entry: dict[str, Any], name: str, baseline: bool) -> dict[str, Any]:
    data = entry.get("data") or {}
    metrics = {path: (m.get("data") or {}) for path, m in (data.get("metrics") or {}).items()}
    params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data") or {})
    return {"name": name, "baseline": baseline, "metrics": metrics, "params": params}


def rows_of(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`dvc exp show --json` as rows: each baseline (workspace, branch or commit), then its
    experiments (their newest rev)."""
    rows = []
    for baseline in shown:
        rev = str(baseline["rev"])
        rows.append(_row(baseline, baseline.get("name") or (rev if rev == "workspace" else rev[:7]), True))
        for experiment in baseline.get("experiments") or []:
            revs = experiment.get("revs") or []
            if revs:
                rows.append(_row(revs[0], experiment.get("name") or str(revs[0]["rev"])[:7], False))
    return rows


def _name(row: dict[str, Any]) -> str:
    """A baseline by its name (workspace, branch, sha); an experiment indented under it."""
    return row["name"] if row["baseline"] else f"  {row['name']}"


def _param_keys(task: str, rows: list[dict[str, Any]]) -> list[str]:
    """The params this task's stages read (its own section and the global ones) whose value
    is not the same in every row."""
    keys = {k for row in rows for k in row["params"]}
    own = [k for k in keys if k.startswith(f"tasks.{task}.") or not k.startswith("tasks.")]
    return sorted(k for k in own if len({_value(row["params"].get(k)) for row in rows}) > 1)


def render(task: str, rows: list[dict[str, Any]], width: int | None = None) -> str:
    """`rows` (rows_of); every line at most `width` columns."""
    width = width or terminal_width()
    paths = StagePaths(task)
    metric_cols = [(str(paths.metrics), name) for name in METRICS[task]]
    cells = [[_metric(row["metrics"].get(path, {}).get(name)) for path, name in metric_cols]
             + [{1: "passed", 0: "rejected"}.get(row["metrics"].get(str(paths.gate_metrics), {}).get("passed"), MISSING)]
             for row in rows]
    heads = [name for _, name in metric_cols] + ["gate"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    name_width = max(10, min(max(len(_name(r)) for r in rows), 32, width - sum(w + 2 for w in widths)))

    def line(name: str, values: list[str]) -> str:
        name = name if len(name) <= name_width else name[: name_width - 1] + "…"
        return (f"{name:<{name_width}}" + "".join(f"  {v:>{w}}" for v, w in zip(values, widths, strict=True)))[:width]

    title = f"{task}: {len(rows)} row(s) of `dvc exp show`, columns from {paths.metrics} and {paths.gate_metrics}"
    out = [*textwrap.wrap(title, width, subsequent_indent="  "), line("experiment", heads)]
    out += [line(_name(row), c) for row, c in zip(rows, cells, strict=True)]
    params = _param_keys(task, rows)
    if not params:
        out.append("params: the same in every row")
        return "\n".join(out)
    short = {k: k.removeprefix(f"tasks.{task}.") for k in params}
    out.append(f"params that differ between the rows (tasks.{task}.* without that prefix):")
    for row in rows:
        text = "  ".join(f"{short[k]}={_value(row['params'].get(k))}" for k in params)
        prefix = f"  {_name(row).strip()}: "
        out += textwrap.wrap(text, width, initial_indent=prefix, subsequent_indent=" " * 6,
                             break_long_words=True, break_on_hyphens=False)
    return "\n".join(out)


def compare(tasks: list[str], num: int = 1, width: int | None = None) -> str:
    """The tables of `tasks` over the experiments of the last `num` commits."""
    from components.errors import ConfigError
    from components.runtime.tools import BIN, with_tools

    shown = subprocess.run([str(BIN / "dvc"), "exp", "show", "--json", "-n", str(num)], capture_output=True,
                           text=True, env=with_tools())
    if shown.returncode != 0:
        raise ConfigError(f"`dvc exp show` failed: {shown.stderr.strip()[-500:]}; fix: run it from "
                          "the repository root (where dvc.yaml is)")
    rows = rows_of(json.loads(shown.stdout))
    return "\n\n".join(render(task, rows, width) for task in tasks)
