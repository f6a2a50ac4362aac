"""`cvops compare`: one task's experiments as a table that fits a terminal.

`dvc exp show` puts every metric of every task and every param in one row (hundreds of
columns of "…"). This reads the same rows (`dvc.api.exp_show`) and shows, per task, its
headline metrics (the task registry's import-free METRICS) and the gate's outcome as columns,
and below them only the params that differ between the rows, wrapped to the width.
"""

from __future__ import annotations

import json
import shutil
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


def _name(row: dict[str, Any]) -> str:
    """The experiment's name, indented under its baseline; a baseline by its rev (workspace, branch, sha)."""
    if row.get("typ") == "baseline":
        return str(row.get("rev"))
    return f"  {row.get('Experiment') or row.get('rev')}"


def _param_keys(task: str, rows: list[dict[str, Any]], metric_keys: set[str]) -> list[str]:
    """The params this task's stages read (its own section and the global ones) whose value
    is not the same in every row."""
    keys = {k for row in rows for k in row if ":" not in k and k not in metric_keys}
    own = [k for k in keys if k.startswith(f"tasks.{task}.") or not k.startswith("tasks.")]
    meta = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    return sorted(k for k in own if k not in meta and len({_value(row.get(k)) for row in rows}) > 1)


def render(task: str, rows: list[dict[str, Any]], width: int | None = None) -> str:
    """`rows` as dvc.api.exp_show returns them; every line at most `width` columns."""
    width = width or terminal_width()
    paths = StagePaths(task)
    metric_cols = [(name, f"{paths.metrics}:{name}") for name in METRICS[task]]
    gate_key = f"{paths.gate_metrics}:passed"
    cells = [[_metric(row.get(key)) for _, key in metric_cols]
             + [{1: "passed", 0: "rejected"}.get(row.get(gate_key), MISSING)] for row in rows]
    heads = [name for name, _ in metric_cols] + ["gate"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    name_width = max(10, min(max(len(_name(r)) for r in rows), 32, width - sum(w + 2 for w in widths)))

    def line(name: str, values: list[str]) -> str:
        name = name if len(name) <= name_width else name[: name_width - 1] + "…"
        return (f"{name:<{name_width}}" + "".join(f"  {v:>{w}}" for v, w in zip(values, widths, strict=True)))[:width]

    title = f"{task}: {len(rows)} row(s) of `dvc exp show`, columns from {paths.metrics} and {paths.gate_metrics}"
    out = [*textwrap.wrap(title, width, subsequent_indent="  "), line("experiment", heads)]
    out += [line(_name(row), c) for row, c in zip(rows, cells, strict=True)]
    params = _param_keys(task, rows, {key for _, key in metric_cols})
    if not params:
        out.append("params: the same in every row")
        return "\n".join(out)
    short = {k: k.removeprefix(f"tasks.{task}.") for k in params}
    out.append(f"params that differ between the rows (tasks.{task}.* without that prefix):")
    for row in rows:
        text = "  ".join(f"{short[k]}={_value(row.get(k))}" for k in params)
        prefix = f"  {_name(row).strip()}: "
        out += textwrap.wrap(text, width, initial_indent=prefix, subsequent_indent=" " * 6,
                             break_long_words=True, break_on_hyphens=False)
    return "\n".join(out)


def compare(tasks: list[str], num: int = 1, width: int | None = None) -> str:
    """The tables of `tasks` over the experiments of the last `num` commits."""
    import dvc.api
    from dvc.exceptions import NotDvcRepoError

    from components.errors import ConfigError

    try:
        rows = dvc.api.exp_show(num=num)
    except NotDvcRepoError:
        raise ConfigError("cvops compare: not in a DVC repository; fix: run it from the repository root "
                          "(where dvc.yaml is)") from None
    return "\n\n".join(render(task, rows, width) for task in tasks)
