"""Every registered task: dataset -> batch -> forward -> loss -> metric -> serving records,
on tiny data made by the shapes generator. Parametrized over the registry, so a new task
is tested for free."""

from pathlib import Path

import pytest
import torch

from components.data import shapes
from components.data.datamodule import CVDataModule
from components.tasks import TASKS

TASK_NAMES = sorted(TASKS)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    cfg = shapes.ShapesConfig(num_images=24, image_size=64, objects_per_image=(1, 3), seed=1)
    return shapes.generate(tmp_path_factory.mktemp("shapes") / "data", cfg)


@pytest.fixture(params=TASK_NAMES)
def task_data(request, shapes_root) -> CVDataModule:
    return CVDataModule(shapes_root, TASKS[request.param], image_size=64, batch_size=4, augment=["hflip"])


def test_batch_forward_loss_metric_and_records(task_data):
    spec = task_data.spec
    torch.manual_seed(0)
    model = spec.build_model(next(iter(spec.models)), len(task_data.classes))
    images, targets = next(iter(task_data.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0

    model.train()
    loss = spec.loss(model, images, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        preds = spec.predict(model, images)
    metric = spec.make_metric(len(task_data.classes))
    metric.update(preds, targets)
    summary = spec.summarize(metric.compute(), task_data.classes)
    assert spec.monitor in summary and all(isinstance(v, float) for v in summary.values())

    records = spec.format_predictions(preds, task_data.classes, [(64, 64)] * len(images))
    assert len(records) == len(images)

    from components.tasks.drawing import to_uint8

    drawn = [spec.draw(to_uint8(image), records[i], task_data.classes, targets[i]) for i, image in enumerate(images)]
    assert all(d.dtype == torch.uint8 and d.shape == drawn[0].shape and d.shape[0] == 3 for d in drawn)
    alone = spec.draw(to_uint8(images[0]), records[0], task_data.classes)  # `cvops predict`: no ground truth
    assert alone.dtype == torch.uint8 and alone.shape[1] == drawn[0].shape[1] and alone.shape[2] <= drawn[0].shape[2]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_model_in_the_zoo_builds(task):
    spec = TASKS[task]
    for arch in spec.models:
        model = spec.build_model(arch, num_classes=3)
        assert sum(p.numel() for p in model.parameters()) > 0, arch


@pytest.mark.parametrize("task", TASK_NAMES)
def test_unknown_arch_names_the_choices(task):
    with pytest.raises(ValueError, match="choose one of"):
        TASKS[task].build_model("no_such_net", 3)
