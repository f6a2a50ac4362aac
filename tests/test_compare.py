"""`cvops compare`: per task, the experiments' headline metrics and gate as columns, the params
that differ below them, every line within the terminal's width. The input is `dvc exp show
--json`'s shape (tests/test_pipeline.py runs the command on the pipeline's real workspace)."""

from __future__ import annotations

from components.runtime.compare import render, rows_of
from components.tasks import METRICS

TASK = "classification"
M, G = f"reports/{TASK}/metrics.json", f"reports/{TASK}/gate_metrics.json"


def entry(rev: str, name: str | None, metrics: dict, params: dict, experiments: list | None = None) -> dict:
    """One revision as `dvc exp show --json` writes it."""
    data = {"rev": rev, "metrics": {path: {"data": values} for path, values in metrics.items()},
            "params": {"params.yaml": {"data": params}}, "deps": {}, "outs": {}}
    return {"rev": rev, "name": name, "data": data, "error": None, "experiments": experiments}


def params(epochs: int, lr: float, augment: list, seed: int) -> dict:
    corruptions = {f"c{i}": [0.85, 0.7, 0.55, 0.4, 0.3] for i in range(12)}  # the same in every row
    return {"seed": seed, "ray": {"num_workers": 2}, "tasks": {
        TASK: {"train": {"epochs": epochs, "lr": lr, "augment": augment}, "evaluate": {"corruptions": corruptions}},
        "detection": {"train": {"epochs": 30 + epochs}}}}  # another task's: not this table's


def test_a_wide_experiment_table_fits_100_columns():
    scores = {name: 0.9 + i / 100 for i, name in enumerate(METRICS[TASK])} | {"recall/circle": 0.97}
    other = {"reports/detection/metrics.json": {"map": 0.5}}
    night = entry("a1b2c3d4e5", "a-very-long-experiment-name-that-someone-typed-at-night",
                  {M: scores, G: {"passed": 0}, **other}, params(20, 3e-4, ["hflip", "rotate"], 7))
    shown = [
        entry("workspace", None, {M: scores, G: {"passed": 1}, **other}, params(20, 3e-4, ["hflip", "rotate"], 7)),
        entry("0123456789abcdef", "main", {M: scores, G: {"passed": 1}, **other}, params(15, 3e-3, ["hflip"], 42),
              experiments=[{"revs": [night], "name": night["name"], "executor": None}]),
    ]
    rows = rows_of(shown)
    assert [(r["name"], r["baseline"]) for r in rows] == [("workspace", True), ("main", True), (night["name"], False)]
    text = render(TASK, rows, width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, text
    header = next(line for line in lines if line.startswith("experiment"))
    assert header.split() == ["experiment", *METRICS[TASK], "gate"]
    assert "recall/circle" not in text and "map" not in header, "this task's headline metrics only"
    assert any(line.startswith("  a-very-long") and line.rstrip().endswith("rejected") for line in lines)
    assert "train.epochs=20" in text and "train.epochs=15" in text and "lr=0.0003" in text and "seed=7" in text
    assert "detection" not in text.split("params that differ")[1] and "num_workers" not in text
    assert "corruptions" not in text, "identical in every row"


def test_rows_without_the_tasks_results_show_dashes():
    shown = [entry("workspace", None, {}, {"seed": 1}), entry("abcdef123", "main", {}, {"seed": 1})]
    text = render("segmentation", rows_of(shown), width=100)
    assert "params: the same in every row" in text
    assert text.splitlines()[-3].split() == ["workspace", *["-"] * (len(METRICS["segmentation"]) + 1)]
