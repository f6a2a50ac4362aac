"""Fairness, corruptions and adversarial attacks against independent references (fairlearn,
torchattacks) and properties that must hold on a small trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fairlearn.metrics import MetricFrame, demographic_parity_difference, equalized_odds_difference
from torch import nn

from components.config import EvaluateConfig
from components.evaluation import adversarial, corruptions, fairness
from components.evaluation.predictions import predict_all, to_model, to_pixels
from components.tasks import TASKS, get_task
from components.tasks.nets import SmallCNN

CLS = get_task("classification")


def bars(n: int, seed: int, size: int = 16) -> tuple[list, list[str]]:
    """Easy 3-class images (horizontal bar, vertical bar, blob) a CNN learns in seconds. The
    'night' group (~20%) is darker, lower-contrast and noisier, and half of its images show no
    shape at all: no model can classify those above chance, so night is worse than day by
    construction (a fairness gap every model that learns day has), whatever the CPU."""
    gen = torch.Generator().manual_seed(seed)
    samples, groups = [], []
    for i in range(n):
        label, night = i % 3, bool(torch.rand(1, generator=gen) < 0.2)
        blank = night and bool(torch.rand(1, generator=gen) < 0.5)
        x = torch.full((3, size, size), 0.1 if night else 0.7)
        r, c = (int(v) for v in torch.randint(2, size - 6, (2,), generator=gen))
        patch = {0: (slice(r, r + 2), slice(2, size - 2)), 1: (slice(2, size - 2), slice(c, c + 2)), 2: (slice(r, r + 4), slice(c, c + 4))}[label]
        if not blank:
            x[(slice(None), *patch)] = 0.3 if night else 0.1
        x = (x + (0.08 if night else 0.03) * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        samples.append((to_model(x), label))
        groups.append("night" if night else "day")
    return samples, groups


@pytest.fixture(scope="module")
def trained():
    """A SmallCNN trained for a few seconds on `bars`, with held-out samples and groups.

    The tests below assert properties of this model, not of one training trajectory (another
    CPU's kernels round differently and train another model): what they rely on is checked
    here first, with a message that blames the fixture. Label smoothing bounds the logits, so
    the softmax never saturates and every input gradient the attacks follow is non-zero."""
    train, _ = bars(600, seed=1)
    samples, groups = bars(300, seed=2)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(8):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch)).tolist()
        for start in range(0, len(order), 32):
            images, targets = CLS.collate([train[i] for i in order[start:start + 32]])
            opt.zero_grad()
            nn.functional.cross_entropy(model.train()(images), targets, label_smoothing=0.1).backward()
            opt.step()
    model.eval()
    day = [s for s, g in zip(samples, groups, strict=True) if g == "day"]
    assert _accuracy(model, day) > 0.95, "fixture off: the model did not learn the day images (not a bug in the code under test)"
    images, targets = CLS.collate(samples)
    with adversarial.attack_mode(model):
        flat = (adversarial.input_gradient(CLS, model, to_pixels(images), targets) == 0).float().mean()
    assert flat < 0.1, f"fixture off: {flat:.0%} of the input gradient is exactly 0 (a saturated softmax), attacks cannot move"
    return model, ["hbar", "vbar", "blob"], samples, groups


def _accuracy(model, samples) -> float:
    preds, targets = predict_all(CLS, model, samples, 64)
    return float((preds.argmax(1) == targets).float().mean())


# ---- fairness ---------------------------------------------------------------------------
def test_per_group_metrics_and_parity_equal_fairlearn():
    rng = np.random.default_rng(0)
    n = 200
    y_true = rng.integers(0, 2, n)
    groups = np.where(rng.random(n) < 0.3, "b", "a")
    flip = rng.random(n) < np.where(groups == "b", 0.35, 0.1)  # group b is worse
    y_pred = np.where(flip, 1 - y_true, y_true)
    probs = torch.nn.functional.one_hot(torch.as_tensor(y_pred), 2).float()
    report = fairness.fairness_report(CLS, ["x", "y"], probs, torch.as_tensor(y_true), list(groups), 50, 10, seed=0)

    from sklearn.metrics import accuracy_score

    reference = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    by_group = {r["group"]: r["value"] for r in report["groups"]}
    assert by_group == pytest.approx(reference.by_group.to_dict())
    assert report["worst_group_gap"] == pytest.approx(reference.difference())
    assert report["min_max_ratio"] == pytest.approx(reference.ratio())
    assert report["worst_group"] == "b"
    assert report["demographic_parity_difference"] == pytest.approx(demographic_parity_difference(y_true, y_pred, sensitive_features=groups))
    assert report["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(y_true, y_pred, sensitive_features=groups))
    low, high = report["worst_group_gap_ci"]
    assert low <= report["worst_group_gap"] <= high and high > low


def test_small_groups_are_reported_and_no_attribute_is_explicit():
    probs = torch.eye(3)[torch.tensor([0, 1, 2] * 10)]
    targets = torch.tensor([0, 1, 2] * 10)
    report = fairness.fairness_report(CLS, list("abc"), probs, targets, ["day"] * 25 + ["night"] * 5, 10, 10, 0)
    night = next(r for r in report["groups"] if r["group"] == "night")
    assert night["status"] == "too_small" and night["n"] == 5 and night["value"] is None
    assert report["status"] == "fewer_than_two_measurable_groups"
    none = fairness.fairness_report(CLS, list("abc"), probs, targets, [""] * 30, 10, 10, 0)
    assert none["status"] == "no_sensitive_attribute" and fairness.flat_metrics(none) == {}


def test_under_represented_group_gap_is_visible(trained):
    model, classes, samples, groups = trained
    preds, targets = predict_all(CLS, model, samples, 64)
    report = fairness.fairness_report(CLS, classes, preds, targets, groups, 100, 10, seed=0)
    assert report["status"] == "ok" and report["worst_group"] == "night"
    low, high = report["worst_group_gap_ci"]
    assert report["worst_group_gap"] > 0.02 and low > 0, report


# ---- adversarial ------------------------------------------------------------------------
class Normalized(nn.Module):
    """The model on [0, 1] pixels, as torchattacks expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_model(x))


def test_fgsm_and_pgd_equal_torchattacks(trained):
    torchattacks = pytest.importorskip("torchattacks")
    model, _, samples, _ = trained
    images, targets = CLS.collate(samples[:64])
    pixels = to_pixels(images)
    eps = 4 / 255
    ours = adversarial.fgsm(CLS, model, pixels, targets, eps)
    theirs = torchattacks.FGSM(Normalized(model).eval(), eps=eps)(pixels, targets)
    assert (ours - theirs).abs().max() < 1e-5
    ours = adversarial.pgd(CLS, model, pixels, targets, eps, steps=7, step_size=1 / 255, random_start=False)
    theirs = torchattacks.PGD(Normalized(model).eval(), eps=eps, alpha=1 / 255, steps=7, random_start=False)(pixels, targets)
    # sign() flips where a gradient is ~0; allow a handful of such pixels
    assert ((ours - theirs).abs() > 1e-5).float().mean() < 1e-3


def test_every_eps_in_one_batch_equals_one_eps_at_a_time(trained):
    model, _, samples, _ = trained
    images, targets = CLS.collate(samples[:16])
    pixels, grid = to_pixels(images), [0.01, 0.03]
    together = adversarial.fgsm(CLS, model, pixels, targets, grid)  # one gradient for both budgets
    for j, eps in enumerate(grid):
        assert torch.allclose(together[16 * j:16 * (j + 1)], adversarial.fgsm(CLS, model, pixels, targets, eps))
    eps = torch.tensor(grid).repeat_interleave(16)
    together = adversarial.pgd(CLS, model, pixels.repeat(2, 1, 1, 1), targets.repeat(2), eps, 5, eps / 4, random_start=False)
    for j, e in enumerate(grid):
        alone = adversarial.pgd(CLS, model, pixels, targets, e, 5, e / 4, random_start=False)
        assert ((together[16 * j:16 * (j + 1)] - alone).abs() > 1e-5).float().mean() < 1e-3  # sign() of ~0 gradients
    report = adversarial.adversarial_report(CLS, model, list("abc"), samples[:40], grid, 3, 0.25, 1.0, batch_size=16, seed=0)
    images, targets = CLS.collate(samples[:40])
    for eps in grid:  # the report's batches of (image, eps) pairs measure what one eps at a time does
        adv = adversarial.fgsm(CLS, model, to_pixels(images), targets, eps)
        assert report["curves"]["fgsm"][eps] == pytest.approx(_accuracy(model, list(zip(to_model(adv), targets, strict=True))))


def _loss(model, pixels, targets) -> float:
    with torch.no_grad():
        return float(CLS.loss(model, to_model(pixels), targets))


@pytest.mark.parametrize("eps", [0.03, 0.08])
def test_attacks_stay_in_budget_and_pgd_hurts_more(trained, eps):
    model, _, samples, _ = trained
    images, targets = CLS.collate(samples)
    pixels = to_pixels(images)
    gen = torch.Generator().manual_seed(0)
    adv_f = adversarial.fgsm(CLS, model, pixels, targets, eps)
    adv_p = adversarial.pgd(CLS, model, pixels, targets, eps, 10, eps / 4, generator=gen)
    for adv in (adv_f, adv_p):
        assert (adv - pixels).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
    # What the attacks maximise is the loss: one signed step raises it, ten projected steps more.
    assert _loss(model, pixels, targets) < _loss(model, adv_f, targets) < _loss(model, adv_p, targets)
    acc = {name: _accuracy(model, [(to_model(a), t) for a, t in zip(adv, targets, strict=True)]) for name, adv in (("fgsm", adv_f), ("pgd", adv_p))}
    clean = _accuracy(model, samples)
    assert acc["pgd"] <= acc["fgsm"] <= clean  # a model robust at a small eps keeps its accuracy there
    if eps >= 0.08:  # a budget that half-erases a night bar: no model of these images stays robust
        assert acc["pgd"] < clean - 0.05, acc
    assert model.training is False  # attacks restore eval mode


# ---- corruptions ------------------------------------------------------------------------
def test_corruptions_cover_params_and_are_deterministic(trained):
    levels = EvaluateConfig().corruptions
    corruptions.check_names(levels)
    assert {"gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg"} <= set(levels)
    _, _, samples, _ = trained
    for name in levels:
        a = corruptions.corrupt_samples(CLS, name, levels[name][2], samples[:4], seed=1)
        b = corruptions.corrupt_samples(CLS, name, levels[name][2], samples[:4], seed=1)
        assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True)), name
        assert all(x[0].min() >= -1 and x[0].max() <= 1 for x in a), name
    with pytest.raises(ValueError, match="known corruptions"):
        corruptions.check_names(["fog_of_war"])


def test_severity_five_hurts_more_than_one(trained):
    model, classes, samples, _ = trained
    levels = EvaluateConfig().corruptions
    for name, level in levels.items():  # on the images, whatever the model: severity 5 moves them further
        mild, harsh = (corruptions.corrupt_samples(CLS, name, level[s], samples[:32], seed=1) for s in (0, 4))
        distance = [sum(float((c[0] - x[0]).abs().mean()) for c, x in zip(out, samples, strict=False)) for out in (mild, harsh)]
        assert distance[1] > distance[0], (name, distance)
    report = corruptions.corruption_report(
        CLS, model, classes, samples, {n: [lv[0], lv[4]] for n, lv in levels.items()},
        clean=_accuracy(model, samples), batch_size=128, seed=0,
    )
    by = {(r["corruption"], r["severity"]): r["value"] for r in report["rows"]}
    # On the model, on average: one corruption may even help a given model (JPEG's smoothing
    # against noise), so no single row is a property; the mean over all of them drops by >0.16
    # on every model trained in 20 seeds x 2 CPU capabilities.
    mild, harsh = (np.mean([by[(n, s)] for n in levels]) for s in (1, 2))
    assert harsh < mild - 0.05, by
    assert 0 < report["retention"] < 1


def _box_and_mask_sample(top: int, left: int, size: int = 48):
    from torchvision import tv_tensors

    image = torch.zeros(3, size, size)
    image[:, top:top + 12, left:left + 20] = 1.0  # a white rectangle, the only bright thing
    box = tv_tensors.BoundingBoxes([[left, top, left + 20, top + 12]], format="XYXY", canvas_size=(size, size))
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[top:top + 12, left:left + 20] = 1
    return image, {"boxes": box, "labels": torch.tensor([1]), "mask": tv_tensors.Mask(mask)}


@pytest.mark.parametrize("name", list(corruptions.GEOMETRIC))
@pytest.mark.parametrize("task", list(TASKS))
def test_boxes_and_masks_follow_geometric_corruptions(name, task):
    images, targets = zip(*[_box_and_mask_sample(10, 14), _box_and_mask_sample(24, 8)], strict=True)  # one batch
    level = EvaluateConfig().corruptions[name][4]
    out, moved = corruptions.corrupt(get_task(task), name, level, torch.stack(images), targets, torch.Generator())
    for image, target in zip(out, moved, strict=True):
        bright = image.mean(0) > 0.5
        ys, xs = torch.nonzero(bright, as_tuple=True)
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2  # box holds the object
        assert (xs.min() - x1) < 2 and (x2 - xs.max()) < 3  # and is tight in x
        mask = target["mask"] == 1
        iou = (mask & bright).sum() / (mask | bright).sum()
        assert iou > 0.85, iou


# ---- model card -------------------------------------------------------------------------
def test_model_card_is_self_contained_and_takes_the_verdict(tmp_path):
    import json

    from components.evaluation import card, plots

    fair = {"metric": "accuracy", "status": "ok", "worst_group": "night", "worst_group_gap": 0.2, "worst_group_gap_ci": [0.1, 0.3],
            "min_max_ratio": 0.78, "min_max_ratio_ci": [0.7, 0.9], "demographic_parity_difference": 0.05,
            "groups": [{"group": "day", "n": 80, "status": "ok", "value": 0.95, "ci": [0.9, 0.99]},
                       {"group": "night", "n": 20, "status": "ok", "value": 0.75, "ci": [0.6, 0.9]},
                       {"group": "dusk", "n": 2, "status": "too_small", "value": None, "ci": None}]}
    png = plots.fairness_plot(fair, tmp_path / "evaluation" / "fairness.png")
    rows = [{"corruption": "jpeg", "severity": s, "level": 50, "value": 1 - s / 10} for s in range(1, 6)]
    data = {"model_name": "cvops-classification", "task": "classification", "arch": "small_cnn", "classes": ["a", "b"],
            "date": "2026-11-21", "data": {"path": "data/classification", "version": "abc123", "test_images": 100},
            "config": {"train": {"epochs": 1}}, "metrics": {"accuracy": 0.9}, "fairness": fair,
            "per_class": card.per_class({"accuracy": 0.9, "recall/a": 0.8, "recall/b": 1.0, "fairness/accuracy/day": 0.95}, ["a", "b"]),
            "corruptions": {"metric": "accuracy", "clean": 0.9, "rows": rows, "mean": 0.7, "retention": 0.78, "mce": None},
            "adversarial": {"metric": "accuracy", "rows": [{"attack": "pgd", "eps": 0.01, "value": 0.4}]},
            "plots": {"fairness": str(png)}, "verdict": None}
    card_json = tmp_path / "card" / "card.json"
    card_json.parent.mkdir()
    card_json.write_text(json.dumps(data))
    md, html = card.write_card(card_json)
    text = md.read_text()
    for needle in ("abc123", "| night | 20 | ok | 0.7500", "| dusk | 2 | too_small", "retention 0.7800", "PENDING",
                   "](../evaluation/fairness.png)", "| a | 0.8000 |", "| jpeg | 0.9000 (50) |", "severity 5"):
        assert needle in text, needle
    order = [text.index(h) for h in ("## Gate verdict", "## Headline metrics", "## Per class", "## Fairness",
                                     "## Robustness", "## Figures", "## Data", "## Training config")]
    assert order == sorted(order), "verdict and headline metrics first, the config last"
    assert data["per_class"] == {"recall": {"a": 0.8, "b": 1.0}}
    page = html.read_text()
    assert "data:image/png;base64," in page and "evaluation/fairness.png" not in page
    card.write_card(card_json, {"passed": False, "reason": "gap too large", "checks": [{"metric": "fairness/worst_group_gap", "rule": "max 0.1", "value": 0.2, "passed": False}]})
    assert "NOT PASSED" in md.read_text() and json.loads(card_json.read_text())["verdict"]["reason"] == "gap too large"
