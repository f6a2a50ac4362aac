"""CPU latency of a model per image: p50 / p95 over timed runs after warm-up, at a fixed
thread count, and the throughput that follows. The same timer for eager torch and ONNX
Runtime, so their figures compare like with like."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def latency(fn: Callable[[torch.Tensor], object], batch: torch.Tensor, warmup: int, runs: int) -> dict[str, float]:
    """{"p50_ms", "p95_ms"} per image and {"images_per_s"} of fn(batch)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(batch)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
    per_image = np.array(times) * 1000 / len(batch)
    return {"p50_ms": float(np.percentile(per_image, 50)), "p95_ms": float(np.percentile(per_image, 95)),
            "images_per_s": float(len(batch) / np.median(times))}


class threads:
    """torch's intra-op threads set for a block (ORT sessions take theirs at creation)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)
