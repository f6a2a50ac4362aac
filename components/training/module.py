"""The task-agnostic LightningModule: the TaskSpec supplies model, loss, predictions, metric."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from components.config import ModelConfig, TrainConfig
from components.tasks import get_task


class CVModule(L.LightningModule):
    def __init__(self, task: str, classes: list[str], model_cfg: dict, train_cfg: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = get_task(task)
        self.classes = classes
        self.model_cfg, self.train_cfg = ModelConfig(**model_cfg), TrainConfig(**train_cfg)
        cfg = self.model_cfg
        self.model = self.spec.build_model(cfg.arch, len(classes), weights=cfg.weights, weights_path=cfg.weights_path)
        self.val_metric = self.spec.make_metric(len(classes))

    def forward(self, images: torch.Tensor) -> Any:
        return self.spec.predict(self.model, images)

    # ---- transfer learning: freeze the backbone for the first N epochs -----------------
    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.model_cfg.freeze_backbone_epochs
        for param in self.spec.backbone_parameters(self.model):
            param.requires_grad_(not frozen)

    def training_step(self, batch: tuple[torch.Tensor, Any], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        loss = self.spec.loss(self.model, images, targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, Any], batch_idx: int) -> None:
        images, targets = batch
        self.val_metric.update(self.spec.predict(self.model, images), targets)

    def on_validation_epoch_end(self) -> None:
        summary = self.spec.summarize(self.val_metric.compute(), self.classes)  # synced over workers
        self.val_metric.reset()
        for name, value in summary.items():  # identical on every rank after compute()
            self.log(f"val/{name}", value, sync_dist=True)

    def configure_optimizers(self) -> dict:
        cfg = self.train_cfg
        backbone = {id(p) for p in self.spec.backbone_parameters(self.model)}
        groups = [
            {"params": [p for p in self.model.parameters() if id(p) in backbone],
             "lr": cfg.lr * self.model_cfg.backbone_lr_factor},
            {"params": [p for p in self.model.parameters() if id(p) not in backbone], "lr": cfg.lr},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return {"optimizer": optimizer}
        steps = max(1, self.trainer.estimated_stepping_batches)
        warmup = min(100, steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
