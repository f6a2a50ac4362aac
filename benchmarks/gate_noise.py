"""Seed noise of every gated metric, for the gate's default tolerances (README, gate section).

Trains one task's configured model with several seeds on the same reduced shapes data (one
process, no Ray or MLflow registry), runs the full evaluation suite (the evaluate stage's
run_suite, with the task's evaluate params) on the same test split, and prints per gated
metric the mean, standard deviation and range over seeds, plus the paired bootstrap interval
of the monitor metric between seed 0 and each other seed (what the gate's change check sees
for two equally good models). One JSON line per seed goes to --out as it finishes.

    python benchmarks/gate_noise.py --task classification --images 1200 --epochs 4 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from components.config import parse_params
from components.data import shapes
from components.data.datamodule import CVDataModule
from components.evaluation.suite import paired_bootstrap, run_suite, split_predictions
from components.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def gated(params, task: str) -> list[str]:
    g = params.task(task).gate
    return list(dict.fromkeys([t.metric for t in g.thresholds] + [c.metric for c in g.changes]))


def train(spec, dm: CVDataModule, arch: str, epochs: int, lr: float, seed: int):
    """The learning_curve.py loop (AdamW, one-cycle), seeded: init, shuffle and augmentation."""
    torch.manual_seed(seed)
    model = spec.build_model(arch, len(dm.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loader = dm.train_dataloader()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(loader), pct_start=0.1)
    for _ in range(epochs):
        model.train()
        for images, targets in loader:
            loss = spec.loss(model, images, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True, choices=list(TASKS))
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--robustness-images", type=int, default=None, help="default: the task's evaluate param")
    ap.add_argument("--out", type=Path, default=Path("/tmp/gate_noise.jsonl"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlruns.db")  # no champion
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = raw["tasks"][a.task]
    size = a.image_size or cfg["data"]["image_size"]
    if a.robustness_images is not None:
        cfg["evaluate"]["robustness_images"] = a.robustness_images
    params = parse_params(raw)
    tc = params.task(a.task)
    root = Path(f"/tmp/cvops_gate_noise_{a.task}_{a.images}_{size}")
    if not (root / "dataset.json").exists():
        shapes.generate(root, shapes.ShapesConfig(num_images=a.images, image_size=size,
                                                  objects_per_image=tuple(tc.data.objects_per_image)))
    spec = TASKS[a.task]
    dm = CVDataModule(root, spec, size, tc.train.batch_size, tc.train.augment)
    rows, preds = [], []
    for seed in range(a.seeds):
        t0 = time.time()
        model = train(spec, dm, tc.model.arch, a.epochs, tc.train.lr, seed)
        metrics = run_suite(params, a.task, model, dm)["metrics"]
        p, targets = split_predictions(model, dm, tc.train.batch_size)
        preds.append(p)
        row = {"task": a.task, "seed": seed, "seconds": round(time.time() - t0), **{m: metrics.get(m) for m in gated(params, a.task)},
               "adversarial": {k: v for k, v in metrics.items() if k.startswith("adversarial/")}}
        if seed:
            row["paired_vs_seed0"] = paired_bootstrap(spec, dm.classes, p, preds[0], targets, 1000, 0.95, 0)
        rows.append(row)
        with a.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    print(f"\n{a.task}: {a.images} images at {size} px, {a.epochs} epochs, seeds 0..{a.seeds - 1}")
    print("| metric | mean | std | min | max |\n|---|---|---|---|---|")
    for m in gated(params, a.task):
        values = [r[m] for r in rows if r[m] is not None]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"| {m} | {statistics.mean(values):.4f} | {std:.4f} | {min(values):.4f} | {max(values):.4f} |")


if __name__ == "__main__":
    main()
