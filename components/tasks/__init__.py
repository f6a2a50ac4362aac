"""Task registry: a plain dict from task name to its TaskSpec. One line per task."""

from components.tasks.base import TaskSpec
from components.tasks.classification import SPEC as CLASSIFICATION
from components.tasks.detection import SPEC as DETECTION
from components.tasks.segmentation import SPEC as SEGMENTATION

TASKS: dict[str, TaskSpec] = {
    CLASSIFICATION.name: CLASSIFICATION,
    DETECTION.name: DETECTION,
    SEGMENTATION.name: SEGMENTATION,
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; registered tasks: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "TaskSpec", "get_task"]
