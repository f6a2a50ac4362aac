"""Wall time of the evaluate stage's work on the test split: one clean pass vs the whole
suite (fairness + bootstraps, corruptions, FGSM/PGD). Run in a workspace where the train
stage ran: `python benchmarks/bench_evaluate.py --task classification`."""

from __future__ import annotations

import argparse
import time

from components import tracking
from components.config import load_params
from components.data.datamodule import CVDataModule
from components.evaluate import run_suite
from components.evaluation.predictions import predict_all
from components.inference import load_checkpoint
from components.paths import StagePaths
from components.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="classification")
    task = parser.parse_args().task
    params, paths, spec = load_params(), StagePaths(task), get_task(task)
    model, meta = load_checkpoint(paths.model)
    data = CVDataModule(paths.data, spec, meta["image_size"], params.task(task).train.batch_size)
    tracking.setup(params)
    start = time.perf_counter()
    test = data.dataset("test")
    samples = [test[i] for i in range(len(test))]
    predict_all(spec, model, samples, params.task(task).train.batch_size)
    clean = time.perf_counter() - start
    start = time.perf_counter()
    suite = run_suite(params, task, model, data)
    full = time.perf_counter() - start
    print(f"{task}: {len(samples)} test images; clean pass (decode + predict) {clean:.1f} s; full suite {full:.1f} s ({full / clean:.0f}x)")
    print({k: round(v, 4) for k, v in suite["metrics"].items() if k.startswith(("fairness/worst", "robustness/ret", "adversarial/pgd"))})


if __name__ == "__main__":
    main()
