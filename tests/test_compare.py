"""`cvops compare`: per task, the experiments' headline metrics and gate as columns, the params
that differ below them, every line within the terminal's width. The rows are dvc.api.exp_show's
(tests/test_pipeline.py runs the command on the pipeline's real workspace)."""

from __future__ import annotations

from components.runtime.compare import render
from components.tasks import METRICS

TASK = "classification"
M, G = f"reports/{TASK}/metrics.json", f"reports/{TASK}/gate_metrics.json"


def row(rev: str, typ: str, experiment: str | None = None, **values) -> dict:
    return {"Experiment": experiment, "rev": rev, "typ": typ, "Created": None, "parent": None, "State": None,
            "Executor": None, **values}


def test_a_wide_experiment_table_fits_100_columns():
    params = {f"tasks.{TASK}.evaluate.corruptions.c{i}": [0.85, 0.7, 0.55, 0.4, 0.3] for i in range(12)}
    changed = {**params, f"tasks.{TASK}.train.epochs": 20.0, f"tasks.{TASK}.train.lr": 3e-4,
               f"tasks.{TASK}.train.augment": ["hflip", "rotate"], "seed": 7.0}
    same = {"tasks.detection.train.epochs": 30.0, "ray.num_workers": 2.0}  # another task's, and unchanged
    scores = {f"{M}:{name}": 0.9 + i / 100 for i, name in enumerate(METRICS[TASK])} | {f"{M}:recall/circle": 0.97}
    rows = [
        row("workspace", "baseline", **scores, **{G + ":passed": 1}, **changed, **same),
        row("main", "baseline", **scores, **{G + ":passed": 1}, **params, **{f"tasks.{TASK}.train.epochs": 15.0,
            f"tasks.{TASK}.train.lr": 3e-3, f"tasks.{TASK}.train.augment": ["hflip"], "seed": 42.0}, **same),
        row("a1b2c3d", "branch_commit", "a-very-long-experiment-name-that-someone-typed-at-night",
            **scores, **{G + ":passed": 0}, **changed, **same),
    ]
    text = render(TASK, rows, width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, text
    header = next(line for line in lines if line.startswith("experiment"))
    assert header.split() == ["experiment", *METRICS[TASK], "gate"]
    assert "recall/circle" not in text, "headline metrics only"
    assert any(line.startswith("  a-very-long") and line.rstrip().endswith("rejected") for line in lines)
    assert "train.epochs=20" in text and "train.epochs=15" in text and "lr=0.0003" in text and "seed=7" in text
    assert "detection" not in text and "num_workers" not in text, "unchanged and other tasks' params are left out"
    assert "corruptions" not in text, "identical in every row"


def test_rows_without_the_tasks_results_show_dashes():
    text = render("segmentation", [row("workspace", "baseline"), row("main", "baseline")], width=100)
    assert "workspace" in text and "params: the same in every row" in text
    assert text.splitlines()[-2].split()[1:] == ["-"] * (len(METRICS["segmentation"]) + 1)
