"""Run DVC stages in-process (DVC's Python API) with their output streamed to a logger.

DVC skips unchanged stages by content hash, so the flow reruns only what changed. DVC runs
a stage's command with inherited stdout/stderr; to show those lines in the Prefect UI we
wrap DVC's (private) command runner for the duration of the call and pipe them to the
logger. If a DVC release drops that hook, stages still run and print to the console.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_PATCH_LOCK = threading.Lock()


@dataclass
class StageFailed(RuntimeError):
    """A stage command exited non-zero; `returncode` tells a config or data-contract
    failure (2, 3: retrying cannot help) from anything else."""

    target: str
    returncode: int | None
    last_lines: list[str]

    def __str__(self) -> str:
        tail = "\n".join(self.last_lines[-15:])
        return f"stage {self.target} failed (exit code {self.returncode}):\n{tail}"


# DVC's hints for interactive users (git add ..., autostage, dvc push): noise in a flow log
_HINTS = ("To track the changes with git", "git add", "auto staging", "core.autostage", "Use `dvc push`")


class _ToLogger(logging.Handler):
    def __init__(self, target: logging.Logger | logging.LoggerAdapter, stages: list[str]) -> None:
        super().__init__(logging.INFO)
        self.target, self.stages = target, stages

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if message.startswith("Running stage '"):  # names the stage if a multi-stage run fails
            self.stages.append(message.split("'")[1])
        if message and not any(hint in message for hint in _HINTS):
            self.target.log(record.levelno, "[dvc] %s", message)


@contextmanager
def _streamed(logger: logging.Logger | logging.LoggerAdapter, lines: list[str], codes: list[int],
              stages: list[str] | None = None) -> Iterator[None]:
    import dvc.stage.run as stage_run
    from dvc.stage.exceptions import StageCmdFailedError

    dvc_logger = logging.getLogger("dvc")
    saved = (dvc_logger.handlers[:], dvc_logger.propagate, getattr(stage_run, "_run", None))

    def run_streaming(executable: str | None, cmd: str, **kwargs) -> None:
        process = subprocess.Popen(stage_run._make_cmd(executable, cmd), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1, **kwargs)
        for line in process.stdout:
            lines.append(line.rstrip())
            logger.info("%s", lines[-1])
        codes.append(process.wait())
        if codes[-1] != 0:
            raise StageCmdFailedError(cmd, codes[-1])

    with _PATCH_LOCK:
        dvc_logger.handlers, dvc_logger.propagate = [_ToLogger(logger, stages if stages is not None else [])], False
        if saved[2] is not None:
            stage_run._run = run_streaming
        try:
            yield
        finally:
            dvc_logger.handlers, dvc_logger.propagate = saved[0], saved[1]
            if saved[2] is not None:
                stage_run._run = saved[2]


def reproduce(root: Path, target: str, logger: logging.Logger | logging.LoggerAdapter) -> bool:
    """`dvc repro --single-item <target>`; returns True if the stage ran, False if skipped."""
    from dvc.exceptions import ReproductionError
    from dvc.repo import Repo

    lines: list[str] = []
    codes: list[int] = []
    cwd = os.getcwd()
    os.chdir(root)  # DVC resolves stage targets against the working directory
    try:
        with _streamed(logger, lines, codes), Repo(str(root)) as repo:
            ran = repo.reproduce(targets=[target], single_item=True)
    except ReproductionError as exc:
        raise StageFailed(target, codes[-1] if codes else None, lines) from exc
    finally:
        os.chdir(cwd)
    return bool(ran)


def run_experiment(root: Path, targets: list[str], overrides: dict[str, str], name: str | None,
                   logger: logging.Logger | logging.LoggerAdapter) -> str:
    """`dvc exp run -S k=v ... [--name]` over the targets; results land in the workspace.
    Returns the experiment's name."""
    from dvc.repo import Repo

    lines: list[str] = []
    codes: list[int] = []
    stages: list[str] = []
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with _streamed(logger, lines, codes, stages), Repo(str(root)) as repo:
            params = [f"{key}={value}" for key, value in overrides.items()]
            results = repo.experiments.run(targets=targets, params=params, name=name)
            for rev in results:
                return repo.experiments.get_exact_name([rev]).get(rev) or rev[:7]
    except Exception as exc:
        if codes and codes[-1] != 0:
            # the stage DVC was running when the command failed
            raise StageFailed(stages[-1] if stages else " ".join(targets), codes[-1], lines) from exc
        raise
    finally:
        os.chdir(cwd)
    return name or ""

