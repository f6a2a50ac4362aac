"""L-inf adversarial attacks (FGSM, PGD) on the task's own training loss (TaskSpec.loss), so
they apply to detection and segmentation as well as classification.

Attacks work on pixels in [0, 1] (the model sees them renormalised) and keep every
adversarial image within eps of the clean one and inside [0, 1].
"""

from __future__ import annotations

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


def adversarial_report(
    spec: TaskSpec, model: nn.Module, classes: list[str], samples: Sequence[Sample], eps_grid: list[float],
    steps: int, step_size: float, clean: float, batch_size: int, seed: int, progress: Any = None,
) -> dict[str, Any]:
    """The monitored metric under FGSM and PGD at each eps (eps 0 = clean). Every eps is
    attacked in the same batch: ~batch_size (image, eps) pairs per attack, so memory stays
    that of a training batch; FGSM takes one gradient per image for all eps. `progress`
    advances by one per image pass through the model (forward, or forward and backward)."""
    if not eps_grid:
        return {"metric": spec.monitor, "curves": {"fgsm": {0.0: clean}, "pgd": {0.0: clean}}}
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    grid = torch.tensor(eps_grid, dtype=torch.float32)
    per_batch = max(1, batch_size // len(eps_grid))
    kept: dict[str, list[list[Any]]] = {name: [[] for _ in eps_grid] for name in ("fgsm", "pgd")}
    targets_kept = []
    for start in range(0, len(samples), per_batch):
        images, targets = spec.collate(samples[start:start + per_batch])
        pixels, on_device, n = to_pixels(images.to(device)), to_device(targets, device), len(images)
        repeated = take(on_device, torch.arange(n).repeat(len(eps_grid)))  # budget-major, as fgsm's output
        eps = grid.repeat_interleave(n).to(device)
        attacked = {
            "fgsm": fgsm(spec, model, pixels, on_device, eps_grid),
            "pgd": pgd(spec, model, pixels.repeat(len(eps_grid), 1, 1, 1), repeated, eps, steps, step_size * eps, generator=gen),
        }
        for name, adv in attacked.items():
            with torch.no_grad():
                preds = to_device(spec.predict(model, to_model(adv)), "cpu")
            for j in range(len(eps_grid)):
                kept[name][j].append(take(preds, torch.arange(j * n, (j + 1) * n)))
        targets_kept.append(targets)
        if progress is not None:
            progress.update(n + len(eps_grid) * n * (steps + 2))  # FGSM: 1 gradient + E predictions; PGD: E x (steps + 1)
    targets = concat(targets_kept)
    curves = {
        name: {0.0: clean} | {eps: monitor_value(spec, classes, concat(parts), targets)
                              for eps, parts in zip(eps_grid, per_eps, strict=True)}
        for name, per_eps in kept.items()
    }
    return {"metric": spec.monitor, "curves": curves}


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """adversarial/<attack>_<metric>@<eps>, e.g. adversarial/pgd_accuracy@0.01."""
    return {
        f"adversarial/{name}_{report['metric']}@{eps:g}": value
        for name, curve in report["curves"].items() for eps, value in curve.items() if eps > 0
    }


def curve_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"attack", "eps", "value"}, ...]: the curves as JSON-able rows (plot data, card)."""
    return [{"attack": a, "eps": e, "value": v} for a, c in report["curves"].items() for e, v in sorted(c.items())]
