"""Task registry: task name -> its TaskSpec. One line per task.

The names are known without importing anything; a task's module (torch, torchvision,
torchmetrics: seconds of start-up) is imported on first use, so a process that never touches
a model (params validation, the tune stage with tuning off, `cvops --help`) starts fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.tasks.base import TaskSpec

MODULES = {  # name -> the module whose SPEC is the task's TaskSpec
    "classification": "components.tasks.classification",
    "detection": "components.tasks.detection",
    "segmentation": "components.tasks.segmentation",
}
# name -> the metric the task is selected, tuned and gated on (its TaskSpec's `monitor`): here
# so that params validation knows it without importing the task's module
MONITORS = {"classification": "accuracy", "detection": "map_50", "segmentation": "miou"}
# name -> the task metrics its TaskSpec.summarize writes besides per-class ones, and the prefix
# of those (recall/<class>, ap/<class>, iou/<class>): what a gate may check, known at params load
# (tests/test_gate_names.py checks them against a real evaluation)
METRICS = {
    "classification": ("accuracy", "ece", "macro_f1"),
    "detection": ("map", "map_50", "map_75", "mar_100"),
    "segmentation": ("miou", "dice", "pixel_accuracy"),
}
PER_CLASS = {"classification": "recall/", "detection": "ap/", "segmentation": "iou/"}
# name -> where a figure and `cvops predict` cut a task's boxes (the metrics keep every box):
# lowest score, class-aware NMS IoU, most boxes per image; tasks without boxes have none
OPERATING_POINTS = {"detection": {"conf": 0.5, "iou": 0.5, "max_det": 20}}


class _Registry(Mapping):
    def __getitem__(self, name: str) -> TaskSpec:
        return import_module(MODULES[name]).SPEC

    def __contains__(self, name: object) -> bool:  # Mapping's default would import the module
        return name in MODULES

    def __iter__(self) -> Iterator[str]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


TASKS: Mapping[str, TaskSpec] = _Registry()


def get_task(name: str) -> TaskSpec:
    if name not in MODULES:
        raise KeyError(f"unknown task '{name}'; registered tasks: {', '.join(MODULES)}")
    return TASKS[name]


def __getattr__(name: str):  # `from components.tasks import TaskSpec`, imported when asked for
    if name == "TaskSpec":
        from components.tasks.base import TaskSpec

        return TaskSpec
    raise AttributeError(name)


__all__ = ["TASKS", "TaskSpec", "get_task"]
