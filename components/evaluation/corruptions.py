"""Common corruptions at 5 severities (levels from params.yaml), deterministic given a seed.

A corruption maps a batch (pixels [N, 3, H, W] in [0, 1], one target per image) to a
corrupted batch with tensor ops over the whole batch (JPEG: libjpeg per image, on the CPU).
Photometric ones leave the targets alone; geometric ones are one torchvision v2 transform
applied to the images and every target together (then the task's own target clean-up), so
boxes and masks follow the images.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from components.evaluation.predictions import (
    Sample,
    monitor_value,
    predict_all,
    to_model,
    to_pixels,
)
from components.tasks.base import TaskSpec

Photometric = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=gen).to(x)  # CPU generator: same on any device


def _jpeg(x: torch.Tensor, quality: float, gen: torch.Generator) -> torch.Tensor:
    encoded = TF.jpeg((x * 255).round().to(torch.uint8).cpu(), quality=int(quality))  # libjpeg: same on any device
    return encoded.to(x.device).float() / 255


def _pixelate(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * factor)), max(1, round(w * factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def _blur(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    kernel = 2 * int(3 * sigma) + 1
    return TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


PHOTOMETRIC: dict[str, Photometric] = {
    "gaussian_noise": _noise,
    "gaussian_blur": _blur,
    "brightness": lambda x, f, gen: TF.adjust_brightness(x, f),
    "contrast": lambda x, f, gen: TF.adjust_contrast(x, f),
    "jpeg": _jpeg,
    "pixelate": _pixelate,
}

# Pixels brought in from outside the image are black; in masks they are "ignore" (255), as
# nobody annotated them.
_FILL = {tv_tensors.Mask: 255, "others": 0}
GEOMETRIC: dict[str, Callable[[float], v2.Transform]] = {
    "rotate": lambda degrees: v2.RandomRotation(degrees=(degrees, degrees), fill=_FILL),
    "zoom": lambda scale: v2.RandomAffine(degrees=0, scale=(scale, scale), fill=_FILL),
}
NAMES = [*PHOTOMETRIC, *GEOMETRIC]


def check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"params.yaml tasks.<task>.evaluate.corruptions: unknown {unknown}; known corruptions: {', '.join(NAMES)}")


def generator(seed: int, name: str, level: float) -> torch.Generator:
    """The random stream of one corruption at one level: it depends only on (seed, name,
    level), so reruns give the same images (crc32, not hash(): str hashes change between
    processes)."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{float(level)}".encode()))


def corrupt(spec: TaskSpec, name: str, level: float, pixels: torch.Tensor, targets: Sequence[Any],
            gen: torch.Generator) -> tuple[torch.Tensor, list[Any]]:
    """A corrupted batch: pixels [N, 3, H, W] in [0, 1] and one target per image."""
    if name in PHOTOMETRIC:
        return PHOTOMETRIC[name](pixels, level, gen).clamp(0, 1), list(targets)
    images, moved = GEOMETRIC[name](level)(tv_tensors.Image(pixels), list(targets))
    clean_up = spec.target_transforms()
    if clean_up:
        moved = [v2.Compose(clean_up)(target) for target in moved]
    return images.as_subclass(torch.Tensor), moved


def corrupt_samples(spec: TaskSpec, name: str, level: float, samples: Sequence[Sample], seed: int) -> list[Sample]:
    """The samples (model input, target) under one corruption at one level, as one batch."""
    images, targets = zip(*samples, strict=True)
    pixels, targets = corrupt(spec, name, level, to_pixels(torch.stack(images)), targets, generator(seed, name, level))
    return list(zip(to_model(pixels), targets, strict=True))


def corruption_value(spec: TaskSpec, model: torch.nn.Module, classes: list[str], samples: Sequence[Sample],
                     name: str, level: float, batch_size: int, seed: int) -> float:
    """The monitored metric of the samples under one corruption at one level: one pass, the
    unit the suite spreads over workers (components/evaluation/distributed.py)."""
    preds, targets = predict_all(spec, model, corrupt_samples(spec, name, level, samples, seed), batch_size)
    return monitor_value(spec, classes, preds, targets)


def grid(levels: dict[str, list[float]]) -> list[tuple[str, int, float]]:
    """(corruption, severity 1..5, level) of every corrupted pass, in report order."""
    return [(name, severity, level) for name, lvls in levels.items() for severity, level in enumerate(lvls, start=1)]


def summarize(spec: TaskSpec, levels: dict[str, list[float]], values: Sequence[float], clean: float) -> dict[str, Any]:
    """The report from one value per `grid(levels)` entry: rows, their mean, retention (mean /
    clean) and each corruption's mean error (1 - metric)."""
    rows = [{"corruption": n, "severity": s, "level": lv, "value": v}
            for (n, s, lv), v in zip(grid(levels), values, strict=True)]
    mean = sum(r["value"] for r in rows) / len(rows)
    errors = {n: sum(1 - r["value"] for r in rows if r["corruption"] == n) / len(levels[n]) for n in levels}
    return {"metric": spec.monitor, "clean": clean, "rows": rows, "mean": mean,
            "retention": mean / clean if clean > 0 else 0.0, "errors": errors}


def corruption_report(
    spec: TaskSpec, model: torch.nn.Module, classes: list[str], samples: Sequence[Sample],
    levels: dict[str, list[float]], clean: float, batch_size: int, seed: int, progress: Any = None,
) -> dict[str, Any]:
    """The monitored metric per corruption and severity (1..5), its mean over all of them,
    retention and each corruption's mean error. `progress` advances by one per image predicted."""
    check_names(list(levels))
    values = []
    for name, _, level in grid(levels):
        values.append(corruption_value(spec, model, classes, samples, name, level, batch_size, seed))
        if progress is not None:
            progress.update(len(samples))
    return summarize(spec, levels, values, clean)


def mce(errors: dict[str, float], champion_errors: dict[str, float]) -> float | None:
    """mCE-style: the mean over corruptions of this model's error / the champion's error
    (< 1: more robust than the champion). None without champion errors to compare to."""
    ratios = [errors[n] / champion_errors[n] for n in errors if champion_errors.get(n, 0) > 0]
    return sum(ratios) / len(ratios) if ratios else None


def flat_metrics(report: dict[str, Any], champion_errors: dict[str, float]) -> dict[str, float]:
    out = {f"robustness/mean_corruption_{report['metric']}": report["mean"], "robustness/retention": report["retention"]}
    out.update({f"robustness/{n}_error": e for n, e in report["errors"].items()})
    value = mce(report["errors"], champion_errors)
    if value is not None:
        out["robustness/mce"] = value
    return out
