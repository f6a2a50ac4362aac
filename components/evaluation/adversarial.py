"""L-inf adversarial attacks (FGSM, PGD) on the task's own training loss (TaskSpec.loss), so
they apply to detection and segmentation as well as classification.

Attacks work on pixels in [0, 1] (the model sees them renormalised) and keep every
adversarial image within eps of the clean one and inside [0, 1].
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from components.evaluation.predictions import (
    Sample,
    concat,
    monitor_value,
    take,
    to_device,
    to_model,
    to_pixels,
)
from components.tasks.base import TaskSpec

_FROZEN = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout2d)


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Train mode (some detectors only return losses in it) with batch-norm statistics and
    dropout frozen, so the attacked function is the deployed model; restores the mode."""
    was_training = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, _FROZEN):
            m.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _per_image(value: float | torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """A budget or step, one number or one per image [N], broadcastable against pixels."""
    return torch.as_tensor(value, dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1, 1)


def input_gradient(spec: TaskSpec, model: nn.Module, pixels: torch.Tensor, targets: Any) -> torch.Tensor:
    """d loss / d pixels of the task's training loss (the model in attack mode)."""
    pixels = pixels.detach().requires_grad_(True)
    loss = spec.loss(model, to_model(pixels), targets)
    return torch.autograd.grad(loss, pixels)[0]  # w.r.t. the input only: weights untouched


def pgd(
    spec: TaskSpec, model: nn.Module, pixels: torch.Tensor, targets: Any, eps: float | torch.Tensor, steps: int,
    step_size: float | torch.Tensor, random_start: bool = True, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD. pixels [N, 3, H, W] in [0, 1] -> adversarial pixels, |adv - pixels| <= eps, in
    [0, 1]. eps and step_size are one number or one per image ([N]: several budgets in one
    batch; the loss is a batch mean, and a positive scale leaves every gradient's sign as is)."""
    pixels = pixels.detach()
    eps, step_size = _per_image(eps, pixels), _per_image(step_size, pixels)
    adv = pixels.clone()
    if random_start:
        noise = torch.rand(pixels.shape, generator=generator).to(pixels) * 2 - 1  # CPU generator: same on any device
        adv = (adv + eps * noise).clamp(0, 1)
    with attack_mode(model):
        for _ in range(steps):
            adv = adv + step_size * input_gradient(spec, model, adv, targets).sign()
            adv = (pixels + (adv - pixels).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


def fgsm(spec: TaskSpec, model: nn.Module, pixels: torch.Tensor, targets: Any, eps: float | Sequence[float]) -> torch.Tensor:
    """FGSM at one budget or several from one gradient: pixels [N, 3, H, W] in [0, 1] ->
    [len(eps) * N, 3, H, W], budget-major (a single eps gives [N, ...])."""
    with attack_mode(model):
        step = input_gradient(spec, model, pixels, targets).sign()
    budgets = torch.as_tensor(eps, dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1, 1, 1)
    return (pixels.detach() + budgets * step).clamp(0, 1).flatten(0, 1)


def attack_starts(images: int, batch_size: int, eps_grid: list[float]) -> list[int]:
    """Where each attack batch starts: ~batch_size (image, eps) pairs per batch, so memory
    stays that of a training batch. The batches are the units the suite spreads over workers."""
    return list(range(0, images, max(1, batch_size // max(1, len(eps_grid)))))


def attack_generator(seed: int, start: int) -> torch.Generator:
    """PGD's random start of the batch at `start`: its own stream (crc32 of seed and start, not
    hash(), which changes between processes), so a batch gives the same images wherever and in
    whichever order it runs."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/pgd/{start}".encode()))


def attack_batch(spec: TaskSpec, model: nn.Module, samples: Sequence[Sample], eps_grid: list[float], steps: int,
                 step_size: float, seed: int, start: int) -> tuple[dict[str, list[Any]], Any]:
    """FGSM and PGD at every eps of one batch of samples (those from `start` on): ({attack:
    [predictions at each eps]}, targets), on the CPU. FGSM takes one gradient for all eps."""
    device = next(model.parameters()).device
    grid = torch.tensor(eps_grid, dtype=torch.float32)
    images, targets = spec.collate(samples)
    pixels, on_device, n = to_pixels(images.to(device)), to_device(targets, device), len(images)
    repeated = take(on_device, torch.arange(n).repeat(len(eps_grid)))  # budget-major, as fgsm's output
    eps = grid.repeat_interleave(n).to(device)
    attacked = {
        "fgsm": fgsm(spec, model, pixels, on_device, eps_grid),
        "pgd": pgd(spec, model, pixels.repeat(len(eps_grid), 1, 1, 1), repeated, eps, steps, step_size * eps,
                   generator=attack_generator(seed, start)),
    }
    kept = {}
    for name, adv in attacked.items():
        with torch.no_grad():
            preds = to_device(spec.predict(model, to_model(adv)), "cpu")
        kept[name] = [take(preds, torch.arange(j * n, (j + 1) * n)) for j in range(len(eps_grid))]
    return kept, targets


def batch_passes(images: int, eps_grid: list[float], steps: int) -> int:
    """Image passes through the model of one attack batch (the progress bar's unit): FGSM's
    gradient and one prediction per eps, PGD's steps plus its prediction per eps."""
    return images + len(eps_grid) * images * (steps + 2)


def attack_curves(spec: TaskSpec, classes: list[str], batches: Sequence[tuple[dict[str, list[Any]], Any]],
                  eps_grid: list[float], clean: float) -> dict[str, Any]:
    """The report from every attack batch's (predictions, targets), in batch order (no eps:
    the clean point only)."""
    if not eps_grid:
        return {"metric": spec.monitor, "curves": {"fgsm": {0.0: clean}, "pgd": {0.0: clean}}}
    targets = concat([t for _, t in batches])
    curves = {
        name: {0.0: clean} | {eps: monitor_value(spec, classes, concat([kept[name][j] for kept, _ in batches]), targets)
                              for j, eps in enumerate(eps_grid)}
        for name in ("fgsm", "pgd")
    }
    return {"metric": spec.monitor, "curves": curves}


def adversarial_report(
    spec: TaskSpec, model: nn.Module, classes: list[str], samples: Sequence[Sample], eps_grid: list[float],
    steps: int, step_size: float, clean: float, batch_size: int, seed: int, progress: Any = None,
) -> dict[str, Any]:
    """The monitored metric under FGSM and PGD at each eps (eps 0 = clean). Every eps is
    attacked in the same batch (`attack_batch`); `progress` advances by one per image pass
    through the model (forward, or forward and backward). components/evaluation/distributed.py
    runs the same batches on Ray workers."""
    starts = attack_starts(len(samples), batch_size, eps_grid) if eps_grid else []
    batches = []
    for start, stop in zip(starts, [*starts[1:], len(samples)], strict=True):
        batches.append(attack_batch(spec, model, samples[start:stop], eps_grid, steps, step_size, seed, start))
        if progress is not None:
            progress.update(batch_passes(stop - start, eps_grid, steps))
    return attack_curves(spec, classes, batches, eps_grid, clean)


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """adversarial/<attack>_<metric>@<eps>, e.g. adversarial/pgd_accuracy@0.01."""
    return {
        f"adversarial/{name}_{report['metric']}@{eps:g}": value
        for name, curve in report["curves"].items() for eps, value in curve.items() if eps > 0
    }


def curve_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"attack", "eps", "value"}, ...]: the curves as JSON-able rows (plot data, card)."""
    return [{"attack": a, "eps": e, "value": v} for a, c in report["curves"].items() for e, v in sorted(c.items())]
