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

from components.evaluation.predictions import Sample, metric_value, predict_all, to_model, to_pixels
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


def pgd(
    spec: TaskSpec, model: nn.Module, pixels: torch.Tensor, targets: Any, eps: float, steps: int,
    step_size: float, random_start: bool = True, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD (FGSM when steps=1, step_size=eps, random_start=False).

    pixels [N, 3, H, W] in [0, 1] -> adversarial pixels, |adv - pixels| <= eps, in [0, 1]."""
    pixels = pixels.detach()
    adv = pixels.clone()
    if random_start:
        noise = torch.rand(pixels.shape, generator=generator).to(pixels) * 2 - 1  # CPU generator: same on any device
        adv = (adv + eps * noise).clamp(0, 1)
    with attack_mode(model):
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = spec.loss(model, to_model(adv), targets)
            grad = torch.autograd.grad(loss, adv)[0]  # w.r.t. the input only: weights untouched
            adv = adv.detach() + step_size * grad.sign()
            adv = (pixels + (adv - pixels).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


def fgsm(spec: TaskSpec, model: nn.Module, pixels: torch.Tensor, targets: Any, eps: float) -> torch.Tensor:
    return pgd(spec, model, pixels, targets, eps, steps=1, step_size=eps, random_start=False)


def adversarial_report(
    spec: TaskSpec, model: nn.Module, classes: list[str], samples: Sequence[Sample], eps_grid: list[float],
    steps: int, step_size: float, clean: float, batch_size: int, seed: int, progress: Any = None,
) -> dict[str, Any]:
    """The monitored metric under FGSM and PGD at each eps (eps 0 = clean)."""
    gen = torch.Generator().manual_seed(seed)
    attacks = {
        "fgsm": lambda x, t, eps: fgsm(spec, model, x, t, eps),
        "pgd": lambda x, t, eps: pgd(spec, model, x, t, eps, steps, step_size * eps, generator=gen),
    }
    curves: dict[str, dict[float, float]] = {name: {0.0: clean} for name in attacks}
    for eps in eps_grid:
        for name, attack in attacks.items():
            perturb = lambda images, t, a=attack, e=eps: to_model(a(to_pixels(images), t, e))  # noqa: E731
            preds, targets = predict_all(spec, model, samples, batch_size, perturb=perturb)
            curves[name][eps] = metric_value(spec, len(classes), classes, preds, targets)[spec.monitor]
            if progress is not None:
                progress.update()
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
