"""Learning curve of one task's model on the shapes data, in one process (no Ray, no MLflow):
per epoch, train then the validation metric. For choosing defaults that learn on a CPU.

    python benchmarks/learning_curve.py TASK ARCH NUM_IMAGES IMAGE_SIZE EPOCHS LR
    e.g. python benchmarks/learning_curve.py detection fcos_small 2000 64 12 0.002
"""

import os
import sys
import time

import torch

from components.data import shapes
from components.data.datamodule import CVDataModule
from components.tasks import TASKS


def main(task: str, arch: str, n: int, size: int, epochs: int, lr: float) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = f"/tmp/cvops_shapes_{n}_{size}"
    if not os.path.exists(root + "/dataset.json"):
        shapes.generate(root, shapes.ShapesConfig(num_images=n, image_size=size, objects_per_image=(1, 3)))
    spec = TASKS[task]
    dm = CVDataModule(root, spec, size, 32, ["hflip"])
    model = spec.build_model(arch, len(dm.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * len(dm.train_dataloader())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for images, targets in dm.train_dataloader():
            loss = spec.loss(model, images, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        t1 = time.time()
        model.eval()
        metric = spec.make_metric(len(dm.classes))
        with torch.no_grad():
            for images, targets in dm.val_dataloader():
                metric.update(spec.predict(model, images), targets)
        summary = {k: round(v, 3) for k, v in spec.summarize(metric.compute(), dm.classes).items() if "/" not in k}
        print(epoch, f"loss {total:.2f}", summary, f"{time.time() - t0:.0f}s val {time.time() - t1:.0f}s", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), float(a[5]))
