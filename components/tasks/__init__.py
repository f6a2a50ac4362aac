"""Task registry: a plain dict from task name to its TaskSpec. One line per task."""

from components.tasks.base import TaskSpec
from components.tasks.classification import SPEC as CLASSIFICATION

TASKS: dict[str, TaskSpec] = {
    CLASSIFICATION.name: CLASSIFICATION,
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; registered tasks: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "TaskSpec", "get_task"]
