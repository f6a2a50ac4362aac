"""INT8 by static post-training quantization with ONNX Runtime (QDQ format).

Calibration runs the FP32 graph on a seeded sample of the train split (never the test split
the drop is measured on), MinMax ranges; weights are per-channel int8, activations uint8
(ORT's recommended U8S8 on x86-64). quant_pre_process (shape inference and graph fusions)
runs first, as ORT's quantization guide asks.

The first convolution, the one reading the image, stays FP32 (its input is not quantized
either): on the classification demo's trained small_cnn, quantizing it cost 2.2 accuracy
points (0.9600 eager, 0.9411 INT8, 0.9633 with it in FP32), and it is the cheapest conv of the
network (3 input channels), so INT8 latency did not change (b1 p50 0.245 -> 0.228 ms).
MinMax / Percentile / Entropy calibration and per-tensor weights did not help (0.940-0.943);
PT2E's X86InductorQuantizer, which also leaves the input in float, scored 0.9622
(benchmarks/RESULTS.md, "INT8 two ways").
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from components.serving.onnx_export import INPUT


class BatchReader(CalibrationDataReader):
    """Calibration batches [B, 3, H, W] float32 for the graph's input."""

    def __init__(self, batches: Iterator[np.ndarray]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}


def first_conv(path: Path) -> list[str]:
    """The name of the graph's first Conv (ONNX nodes are in topological order), as a list."""
    return next(([n.name] for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"), [])


def quantize_int8(fp32: Path, out: Path, calibration: Iterator[np.ndarray]) -> Path:
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's "please consider pre-processing" hints
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(out), BatchReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=first_conv(prepared))
    return out
