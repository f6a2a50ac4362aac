"""Where an INT8 (ORT static QDQ) model spends its time against its FP32 ONNX export: ONNX
Runtime's own profiler, time per op type after ORT's graph optimisations (which fuse
DequantizeLinear -> op -> QuantizeLinear into integer kernels where it has one).

    python benchmarks/profile_int8.py --model classification:mobilenet_v3_large:224 --threads 1

Untrained weights and seeded noise calibration (op times do not depend on the values).
Prints, per op type, total ms per run and node count for FP32 and INT8, then the op types of
the optimised INT8 graph that stayed in float between a DequantizeLinear and a QuantizeLinear.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from components.serving.onnx_export import INPUT, export_onnx
from components.serving.quantize import quantize_int8
from components.tasks import get_task


def profile(path: Path, batch: np.ndarray, threads: int, runs: int, optimized: Path) -> dict[str, list[float]]:
    """op type -> [ms per run, nodes] from ORT's profile of `runs` runs after 3 warm-up runs."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    warm = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        warm.run(None, {INPUT: batch})
    options.enable_profiling = True
    options.profile_file_prefix = str(optimized.with_suffix(""))
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 3):
        sess.run(None, {INPUT: batch})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    nodes: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per_op[op][0] += e["dur"] / 1000 / (runs + 3)
            nodes[op].add(e["name"])
    return {op: [ms, len(nodes[op])] for op, (ms, _) in per_op.items()}


def float_islands(optimized: Path) -> dict[str, int]:
    """Op types in the optimised graph that take a DequantizeLinear's output (run in float)."""
    import onnx

    graph = onnx.load(str(optimized)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = defaultdict(int)
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dequantized for i in n.input):
            counts[n.op_type] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="classification:mobilenet_v3_large:224", help="task:arch:size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    task, arch, side = args.model.split(":")
    side = int(side)
    torch.manual_seed(0)
    model = get_task(task).build_model(arch, 4).eval()
    batch = np.random.default_rng(0).uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.int8.onnx"
        export_onnx(model, side, fp32)
        rng = np.random.default_rng(1)
        quantize_int8(fp32, int8, (rng.uniform(-1, 1, (8, 3, side, side)).astype(np.float32) for _ in range(4)))
        result = {name: profile(path, batch, args.threads, args.runs, Path(tmp) / f"{name}.opt.onnx")
                  for name, path in (("fp32", fp32), ("int8", int8))}
        islands = float_islands(Path(tmp) / "int8.opt.onnx")
    for name, ops in result.items():
        total = sum(ms for ms, _ in ops.values())
        print(f"## {args.model} {name}: {total:.1f} ms per run (sum of kernel times, {args.threads} thread(s))")
        for op, (ms, n) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
            print(f"  {op:28s} {ms:8.2f} ms  {100 * ms / total:5.1f}%  {n} nodes")
    print("## INT8 graph after ORT optimisation: op types fed by a DequantizeLinear (run in float):", islands)


if __name__ == "__main__":
    main()
