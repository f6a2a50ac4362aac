"""The evaluation suite in one process vs on 1 and 2 Ray workers (`evaluate.workers`, issue 18).

    .venv/bin/python benchmarks/bench_eval_workers.py --task classification [--images 6000] [--workers 0 1 2]

Generates the task's shapes data at the default params (cached under --data), builds the
default model with seeded random weights (the passes cost the same whatever the weights; a
trained detector keeps fewer boxes, so detection's metric part is heavier here), and times
run_suite with each worker count in a fresh process: Ray's start (a local cluster, as the stage
starts it) apart from the suite. Checks every run gives the in-process metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train_input import TreeCPU  # noqa: E402


def measure(task: str, data_dir: Path, workers: int, threads: int) -> dict:
    import torch

    from components.config import load_params
    from components.data.datamodule import CVDataModule
    from components.evaluation import suite
    from components.runtime import ray_cluster
    from components.tasks import get_task

    torch.set_num_threads(threads)
    _tree_cpu = TreeCPU()  # every process's CPU, the Ray actors' too (the suite kills them before it returns)
    params = load_params(ROOT / "params.yaml")
    cfg, spec = params.task(task), get_task(task)
    params.tasks[task] = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"workers": workers})})
    data = CVDataModule(data_dir, spec, cfg.data.image_size, cfg.train.batch_size)
    torch.manual_seed(0)
    model = spec.build_model(cfg.model.arch, len(data.classes))
    ray_s = 0.0
    if workers:
        start = time.perf_counter()
        ray_cluster.connect(params)  # the suite then reuses this cluster
        ray_s = time.perf_counter() - start
    start, cpu, tree = time.perf_counter(), time.process_time(), _tree_cpu()
    before = dict(_tree_cpu.seen)
    out = suite.run_suite(params, task, model, data)
    top = _tree_cpu.top(before, 5)
    return {"task": task, "workers": workers, "test_images": len(out["samples"]), "ray_start_s": round(ray_s, 1),
            "suite_s": round(time.perf_counter() - start, 1), "driver_cpu_s": round(time.process_time() - cpu, 1),
            "all_cpu_s": round(_tree_cpu() - tree, 1), "top_cpu": top, "metrics": out["metrics"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="classification")
    parser.add_argument("--images", type=int, default=None, help="default: params.yaml's num_images")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process driver")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cvops-bench-eval"))
    parser.add_argument("--child", type=int, default=None)
    args = parser.parse_args()
    data_dir = args.data / args.task
    if args.child is not None:
        print(json.dumps(measure(args.task, data_dir, args.child, args.threads)))
        return
    if not (data_dir / "manifest.csv").exists():
        from components.config import load_params
        from components.data import manifest, shapes
        from components.tasks import get_task

        cfg = load_params(ROOT / "params.yaml").task(args.task).data
        shapes.generate(data_dir, shapes.ShapesConfig(num_images=args.images or cfg.num_images, image_size=cfg.image_size,
                                                      objects_per_image=tuple(cfg.objects_per_image), seed=0))
        manifest.write_manifest(data_dir, get_task(args.task), data_dir / "manifest.csv")
    reference = None
    for workers in args.workers:
        cmd = [sys.executable, __file__, "--child", str(workers), "--task", args.task, "--threads", str(args.threads),
               "--data", str(args.data)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(f"workers {workers} failed:\n{result.stderr[-3000:]}")
            continue
        row = json.loads(lines[-1])
        metrics = row.pop("metrics")
        reference = reference or metrics
        row["same_metrics"] = metrics == reference
        row["load"] = round(os.getloadavg()[0], 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
