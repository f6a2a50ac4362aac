"""Cost of the evaluate stage per task: one clean pass over the test split (decode + predict)
vs the whole suite (fairness with bootstraps, corruptions, FGSM / PGD) vs the whole stage
(the suite, plots, Grad-CAM, card, MLflow logging, and the process's imports), in wall and
CPU seconds, with where the suite's time goes.

Run in a workspace where the train stage ran (data/<task>, models/<task>/model.pt):

    python benchmarks/bench_evaluate.py --task classification detection segmentation

The stage runs in a scratch copy of the workspace (its own MLflow store and reports/), so
the workspace is left as it was. Prints one markdown row per figure for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import mlflow
import torch

from components.config import load_params
from components.evaluation import adversarial, corruptions, fairness
from components.evaluation.predictions import predict_all
from components.paths import StagePaths
from components.runtime import tracking
from components.serving.checkpoint import load_checkpoint
from components.stages import evaluate

PARTS = {  # suite parts timed by wrapping the functions run_suite calls
    "fairness + bootstraps": (fairness, "fairness_report"),
    "corruptions (corrupt + predict + metric)": (corruptions, "corruption_report"),
    "  of which corrupting": (corruptions, "corrupt"),
    "attacks (FGSM + PGD + predict + metric)": (adversarial, "adversarial_report"),
    "plots, Grad-CAM, overlays": (evaluate, "write_plots"),
}


class Clock:
    """Wall and process-CPU seconds of the parts, accumulated over calls."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {}  # in the order the parts start

    @contextmanager
    def time(self, name: str):
        total = self.parts.setdefault(name, [0.0, 0.0])
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            total[0] += time.perf_counter() - wall
            total[1] += time.process_time() - cpu

    def wrap(self, name: str, module, attr: str) -> None:
        inner = getattr(module, attr)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            with self.time(name):
                return inner(*args, **kwargs)

        setattr(module, attr, timed)


@contextmanager
def scratch_workspace(task: str):
    """A copy of the task's model (with a fresh MLflow run to log to) and a link to its data,
    params.yaml alongside: the stage writes reports/ and mlruns.db there, not here."""
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        paths = StagePaths(task)
        shutil.copytree(paths.model_dir, Path(tmp) / paths.model_dir)
        (Path(tmp) / paths.data).parent.mkdir(parents=True)
        (Path(tmp) / paths.data).symlink_to((here / paths.data).resolve())
        shutil.copy("params.yaml", tmp)
        os.chdir(tmp)
        uri = os.environ.pop("MLFLOW_TRACKING_URI", None)  # params' local store, in the scratch dir
        try:
            tracking.setup(load_params())
            with mlflow.start_run() as run:
                pass
            paths.run_info.write_text(json.dumps({"run_id": run.info.run_id}))
            yield
        finally:
            os.chdir(here)
            if uri is not None:
                os.environ["MLFLOW_TRACKING_URI"] = uri


def import_seconds() -> float:
    """Wall seconds of a fresh process importing the evaluate stage (its start-up cost)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import components.stages.evaluate"], check=True)
    return time.perf_counter() - start


def bench(task: str, clock: Clock) -> dict[str, float]:
    params, paths = load_params(), StagePaths(task)
    model, meta = load_checkpoint(paths.model)
    data = evaluate.load_test_split(meta, paths.data, params.task(task).train.batch_size, str(paths.model))
    with clock.time("clean pass (decode + predict)"):
        test = data.dataset("test")
        samples = [test[i] for i in range(len(test))]
        predict_all(data.spec, model, samples, params.task(task).train.batch_size)
    with scratch_workspace(task), clock.time("whole stage in-process (evaluate.run)"):
        evaluate.run(params, task)
    ev, n = params.task(task).evaluate, len(samples)
    subset = min(ev.robustness_images or n, n)
    return {
        "images": n, "subset": subset,
        "forward": n + subset * (sum(map(len, ev.corruptions.values())) + 2 * len(ev.eps)),  # clean, corrupted, attacked
        "backward": subset * (1 + len(ev.eps) * ev.pgd_steps),  # FGSM: one gradient for all eps; PGD: steps per eps
        "pgd": subset * len(ev.eps) * ev.pgd_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=["classification", "detection", "segmentation"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load {load:.1f} at start"
    imports = import_seconds()
    rows = []
    for task in args.task:
        clock = Clock()
        clock.wrap("suite (run_suite)", evaluate, "run_suite")
        for name, (module, attr) in PARTS.items():
            clock.wrap(name, module, attr)
        try:
            sizes = bench(task, clock)
        finally:
            for module, attr in [(evaluate, "run_suite"), *PARTS.values()]:
                setattr(module, attr, getattr(module, attr).__wrapped__)
        p = clock.parts
        clean, suite, stage = p["clean pass (decode + predict)"], p["suite (run_suite)"], p["whole stage in-process (evaluate.run)"]
        print(f"\n{task}: {sizes['images']} test images, robustness subsample {sizes['subset']}; load {os.getloadavg()[0]:.1f} now")
        print(f"  {'part':45s} {'wall s':>8s} {'CPU s':>8s}")
        for name, (wall, cpu) in p.items():
            print(f"  {name:45s} {wall:8.2f} {cpu:8.2f}")
        print(f"  {'process start (imports), separately':45s} {imports:8.2f}")
        passes = (f"model passes over images: {sizes['forward']} forward + {sizes['backward']} forward-and-backward "
                  f"({sizes['pgd']} of them PGD's) vs {sizes['images']} forward in the clean pass")
        print(f"  {passes}")
        stage_wall = stage[0] + imports
        rows.append((f"evaluate, {task}, default params ({sizes['images']} test images, {sizes['subset']} for robustness): "
                     "clean pass (decode + predict) / full suite / whole stage (suite + plots + card + MLflow + process start)",
                     f"wall {clean[0]:.1f} s / {suite[0]:.1f} s ({suite[0] / clean[0]:.0f}x) / {stage_wall:.1f} s ({stage_wall / clean[0]:.0f}x); "
                     f"CPU {clean[1]:.1f} s / {suite[1]:.1f} s ({suite[1] / clean[1]:.0f}x); {passes}"))
    print("\n| figure | value | command | machine | date |\n|---|---|---|---|---|")
    command = f"`python benchmarks/bench_evaluate.py --task {' '.join(args.task)}`"
    for figure, value in rows:
        print(f"| {figure} | {value} | {command} | {machine} | {date.today().isoformat()} |")


if __name__ == "__main__":
    main()
