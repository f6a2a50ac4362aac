"""INT8 two ways on a trained checkpoint: ONNX Runtime static QDQ (what the export stage ships)
against PyTorch's PT2E flow (torch.export -> torchao's prepare_pt2e with X86InductorQuantizer
-> calibrate -> convert_pt2e -> torch.compile / Inductor with freezing, PyTorch's documented
x86 INT8 path). Same calibration sample (the export stage's seeded train images), same test
split and metric code, same timer and thread count.

Run in a workspace that holds the checkpoint and its data (a demo's models/<task>/model.pt
and data/<task>/, with its params.yaml):

    PYTHONPATH=/path/to/torchao python benchmarks/bench_pt2e.py --task classification --threads 2

torchao is not in uv.lock (torch 2.13 moved PT2E out of torch.ao.quantization into it); the
benchmark takes it from PYTHONPATH (`uv pip install --target DIR --no-deps torchao==0.18.0`).
Prints a markdown row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn

from components.config import load_params
from components.evaluation.suite import load_test_split
from components.paths import StagePaths
from components.serving import benchmark
from components.serving.checkpoint import load_checkpoint
from components.serving.onnx_export import export_onnx
from components.serving.onnx_runtime import onnx_model
from components.serving.quantize import quantize_int8
from components.stages.export import _calibration, _metrics


class Compiled(nn.Module):
    """A compiled callable behind nn.Module (predict_all reads the device from a parameter)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self._device = nn.Parameter(torch.empty(0), requires_grad=False)
        object.__setattr__(self, "fn", fn)  # not a submodule: an exported model refuses .eval() (it is in eval already)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def pt2e_int8(model: nn.Module, side: int, calibration: list) -> tuple[nn.Module, float, float]:
    """(compiled INT8 module, prepare + calibrate + convert s, first-call compile s)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    started = time.perf_counter()
    example = (torch.randn(2, 3, side, side),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(model, example, dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for b in calibration:
            prepared(torch.from_numpy(b))
    converted = move_exported_model_to_eval(convert_pt2e(prepared))
    quantized = time.perf_counter()
    torch._inductor.config.freezing = True  # weights as constants: Inductor prepacks the int8 convs (oneDNN)
    compiled = torch.compile(converted, dynamic=True)
    with torch.no_grad():
        compiled(example[0])
    return Compiled(compiled), quantized - started, time.perf_counter() - quantized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="classification")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    params = load_params()
    cfg, paths = params.task(args.task), StagePaths(args.task)
    model, meta = load_checkpoint(paths.model)
    data = load_test_split(meta, paths.data, cfg.train.batch_size, str(paths.model))
    spec, classes, bs, side = data.spec, data.classes, cfg.train.batch_size, meta["image_size"]
    test = data.dataset("test")
    samples = [test[i] for i in range(len(test))]
    calibration = list(_calibration(data, cfg.export.calibration_images, params.seed, bs))
    one, serving = torch.randn(1, 3, side, side), torch.randn(cfg.export.serving_batch, 3, side, side)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, benchmark.threads(args.threads):
        fp32, int8 = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.int8.onnx"
        export_onnx(model, side, fp32)
        started = time.perf_counter()
        quantize_int8(fp32, int8, iter(calibration))
        ort_s = time.perf_counter() - started
        pt2e, pt2e_s, compile_s = pt2e_int8(model, side, calibration)
        models = {"eager FP32": model, "ORT QDQ INT8": onnx_model(int8, meta, args.threads), "PT2E X86Inductor INT8": pt2e}
        for name, m in models.items():
            with torch.no_grad():
                monitor = _metrics(spec, m, samples, classes, bs)[spec.monitor]
                b1 = benchmark.latency(lambda b, m=m: spec.predict(m, b), one, args.warmup, args.runs)
                bn = benchmark.latency(lambda b, m=m: spec.predict(m, b), serving, args.warmup, args.runs)
            out[name] = {"monitor": monitor, "b1": b1, "bn": bn}
    eager = out["eager FP32"]
    cells = "; ".join(f"{n}: {spec.monitor} {o['monitor']:.4f} (drop {eager['monitor'] - o['monitor']:+.4f}), b1 p50 {o['b1']['p50_ms']:.3f} / "
                      f"p95 {o['b1']['p95_ms']:.3f} ms, b{len(serving)} p50 {o['bn']['p50_ms']:.3f} ms/img" for n, o in out.items())
    print(f"| INT8 two ways, {args.task} `{meta['arch']}` at {side} px (trained, demo checkpoint), {args.threads} threads | {cells}; "
          f"ORT quantize {ort_s:.1f} s; PT2E prepare+calibrate+convert {pt2e_s:.1f} s, Inductor compile {compile_s:.0f} s | "
          f"`PYTHONPATH=<torchao 0.18.0> python benchmarks/bench_pt2e.py --task {args.task} --threads {args.threads} --runs {args.runs}` "
          f"(torch {torch.__version__}) | 2-core AMD EPYC, shared (load {os.getloadavg()[0]:.0f}) | {date.today()} |")


if __name__ == "__main__":
    main()
