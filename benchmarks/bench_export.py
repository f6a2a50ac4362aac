"""Cost of the export stage's artifacts: per-image CPU latency (p50 / p95 at batch 1 and a
serving batch, fixed threads, after warm-up), throughput and size of eager FP32, ONNX FP32
and ONNX INT8 (ORT static QDQ) for zoo models, the export + quantization wall time, and the
PT2E path (torch.ao X86InductorQuantizer + torch.compile) when --pt2e is given.

    python benchmarks/bench_export.py --models classification:small_cnn:224 classification:resnet18:224 \\
        classification:mobilenet_v3_large:224 detection:fcos_small:64 segmentation:unet_small:64 --pt2e

Weights are untrained (latency does not depend on them; the accuracy drop is the export
stage's figure on trained models, reports/<task>/export.json). Calibration uses seeded
uniform-noise batches here. Prints one markdown row per model for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from components.serving import benchmark
from components.serving.onnx_export import export_onnx
from components.serving.onnx_runtime import onnx_model
from components.serving.quantize import quantize_int8
from components.tasks import get_task


def pt2e(model: torch.nn.Module, side: int, batch: torch.Tensor, warmup: int, runs: int) -> str:
    """PT2E static INT8 (X86InductorQuantizer) compiled by Inductor: p50 per image at batch 1."""
    try:
        try:  # torch 2.13 ships PT2E only in torchao (not locked: PYTHONPATH, see bench_pt2e.py)
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
                X86InductorQuantizer,
                get_default_x86_inductor_quantization_config,
            )
        except ModuleNotFoundError:
            from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torch.ao.quantization.quantizer.x86_inductor_quantizer import (
                X86InductorQuantizer,
                get_default_x86_inductor_quantization_config,
            )

        example = (torch.randn(2, 3, side, side),)
        graph = torch.export.export(model, example).module()
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        for _ in range(4):
            prepared(torch.rand(8, 3, side, side) * 2 - 1)
        started = time.perf_counter()
        compiled = torch.compile(convert_pt2e(prepared))
        with torch.no_grad():
            compiled(batch)
        compile_s = time.perf_counter() - started
        figures = benchmark.latency(compiled, batch, warmup, runs)
        return f"{figures['p50_ms']:.2f} ms (compile {compile_s:.0f} s)"
    except Exception as exc:  # noqa: BLE001 - recorded as the row's result
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def row(task: str, arch: str, side: int, args) -> str:
    spec = get_task(task)
    classes = ["background", "a", "b", "c"] if task == "detection" else ["a", "b", "c", "d"]
    torch.manual_seed(0)
    model = spec.build_model(arch, len(classes)).eval()
    meta = {"task": task, "arch": arch, "classes": classes, "image_size": side}
    one, serving = torch.rand(1, 3, side, side) * 2 - 1, torch.rand(args.batch, 3, side, side) * 2 - 1
    out = {}
    with tempfile.TemporaryDirectory() as tmp, benchmark.threads(args.threads):
        fp32, int8 = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.int8.onnx"
        started = time.perf_counter()
        export_onnx(model, side, fp32)
        exported = time.perf_counter()
        rng = np.random.default_rng(0)
        quantize_int8(fp32, int8, (rng.uniform(-1, 1, (8, 3, side, side)).astype(np.float32) for _ in range(args.calibration // 8)))
        quantized = time.perf_counter()
        candidates = {"eager": model, "onnx fp32": onnx_model(fp32, meta, args.threads), "onnx int8": onnx_model(int8, meta, args.threads)}
        sizes = {"eager": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
                 "onnx fp32": fp32.stat().st_size, "onnx int8": int8.stat().st_size}
        for name, m in candidates.items():
            b1 = benchmark.latency(lambda b, m=m: spec.predict(m, b), one, args.warmup, args.runs)
            bn = benchmark.latency(lambda b, m=m: spec.predict(m, b), serving, args.warmup, max(3, args.runs // 4))
            out[name] = (b1, bn, sizes[name] / 2**20)
        extra = f"; PT2E X86Inductor INT8 b1 p50 {pt2e(model, side, one, args.warmup, args.runs)}" if args.pt2e and task == "classification" else ""
    cells = "; ".join(f"{n}: b1 p50 {b1['p50_ms']:.2f} / p95 {b1['p95_ms']:.2f} ms, b{args.batch} {bn['p50_ms']:.2f} ms/img "
                      f"({bn['images_per_s']:.0f} img/s), {mb:.1f} MB" for n, (b1, bn, mb) in out.items())
    speed = out["eager"][0]["p50_ms"] / out["onnx int8"][0]["p50_ms"]
    speed32 = out["eager"][0]["p50_ms"] / out["onnx fp32"][0]["p50_ms"]
    return (f"| export {task} `{arch}` at {side} px, {args.threads} threads: **INT8 / eager FP32 speedup at batch 1** | "
            f"**{speed:.2f}x** (ONNX FP32 {speed32:.2f}x); {cells}; export {exported - started:.1f} s, quantize {quantized - exported:.1f} s{extra} | "
            f"`python benchmarks/bench_export.py --models {task}:{arch}:{side} --threads {args.threads} --runs {args.runs}{' --pt2e' if args.pt2e else ''}` | "
            f"2-core AMD EPYC, shared (load {os.getloadavg()[0]:.0f}) | {date.today()} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["classification:small_cnn:224"], help="task:arch:size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--pt2e", action="store_true", help="also the PT2E X86InductorQuantizer path (classification)")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}")
    for item in args.models:
        task, arch, side = item.split(":")
        print(row(task, arch, int(side), args), flush=True)


if __name__ == "__main__":
    main()
