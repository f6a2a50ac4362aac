"""Run DVC stages in-process (DVC's Python API) with their output streamed to a logger.

DVC skips unchanged stages by content hash, so the flow reruns only what changed. DVC runs
a stage's command with inherited stdout/stderr; to show those lines in the Prefect UI we
wrap DVC's (private) command runner for the duration of the call and pipe them to the
logger. If a DVC release drops that hook, stages still run and print to the console.
Two more hooks, for the Prefect UI: tqdm progress lines go to a `progress` callback instead of
the log (Prefect progress artifacts, not dozens of log records), and each stage of an
experiment runs inside an `each_stage` wrapper (a Prefect task per stage, as for `repro`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.runtime.redact import redact
from components.runtime.tools import with_tools

_PATCH_LOCK = threading.Lock()
# tqdm's default bar: "evaluate classification:  40%|####      | 40/100 [00:03<00:05, 12.1img-pass/s]"
_TQDM = re.compile(r"^(?P<desc>[^|]*?):\s*(?P<percent>\d{1,3})%\|")

#: called with (bar description, percent 0-100) for each tqdm update in a stage's output
Progress = Callable[[str, float], None]
#: runs one stage: (DVC address e.g. "train@classification", the repository DVC runs it in,
#: a call that reproduces it and returns whether it ran)
EachStage = Callable[[str, Path, Callable[[], bool]], bool]


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
        message = redact(record.getMessage().strip())
        if message.startswith("Running stage '"):  # names the stage if a multi-stage run fails
            self.stages.append(message.split("'")[1])
        if message and not any(hint in message for hint in _HINTS):
            self.target.log(record.levelno, "[dvc] %s", message)


@contextmanager
def _streamed(logger: logging.Logger | logging.LoggerAdapter, lines: list[str], codes: list[int],
              stages: list[str] | None = None, progress: Progress | None = None,
              each_stage: EachStage | None = None) -> Iterator[None]:
    import dvc.repo.reproduce as repro
    import dvc.stage.run as stage_run
    from dvc.stage.exceptions import StageCmdFailedError

    dvc_logger = logging.getLogger("dvc")
    saved = (dvc_logger.handlers[:], dvc_logger.propagate, getattr(stage_run, "_run", None))
    reproduce_stage = getattr(repro, "_reproduce_stage", None)  # experiments look it up per stage

    def run_streaming(executable: str | None, cmd: str, **kwargs) -> None:
        kwargs["env"] = with_tools(kwargs.get("env"))  # `cvops` of this environment, activated or not
        process = subprocess.Popen(stage_run._make_cmd(executable, cmd), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1, **kwargs)
        for line in process.stdout:  # text mode: tqdm's \r redraws arrive as lines too
            line = redact(line.rstrip())
            bar = _TQDM.match(line) if progress else None
            if bar:
                progress(bar["desc"].strip(), min(float(bar["percent"]), 100.0))
                continue
            lines.append(line)
            logger.info("%s", line)
        codes.append(process.wait())
        if codes[-1] != 0:
            raise StageCmdFailedError(cmd, codes[-1])

    def stage_in_wrapper(stage, **kwargs):
        result = []  # what DVC's own function returned (the stage if it ran, None if skipped)

        def call() -> bool:
            ran_before = len(codes)
            try:
                result.append(reproduce_stage(stage, **kwargs))
            except Exception as exc:
                if len(codes) > ran_before and codes[-1] != 0:  # its command failed: say how
                    raise StageFailed(stage.addressing, codes[-1], lines[-15:]) from exc
                raise
            return bool(result[-1])

        each_stage(stage.addressing, Path(stage.repo.root_dir), call)
        return result[-1] if result else None

    with _PATCH_LOCK:
        dvc_logger.handlers, dvc_logger.propagate = [_ToLogger(logger, stages if stages is not None else [])], False
        if saved[2] is not None:
            stage_run._run = run_streaming
        if each_stage and reproduce_stage is not None:
            repro._reproduce_stage = stage_in_wrapper
        try:
            yield
        finally:
            dvc_logger.handlers, dvc_logger.propagate = saved[0], saved[1]
            if saved[2] is not None:
                stage_run._run = saved[2]
            if reproduce_stage is not None:
                repro._reproduce_stage = reproduce_stage


def reproduce(root: Path, target: str, logger: logging.Logger | logging.LoggerAdapter,
              progress: Progress | None = None) -> bool:
    """`dvc repro --single-item <target>`; returns True if the stage ran, False if skipped."""
    from dvc.exceptions import ReproductionError
    from dvc.repo import Repo

    lines: list[str] = []
    codes: list[int] = []
    cwd = os.getcwd()
    os.chdir(root)  # DVC resolves stage targets against the working directory
    try:
        with _streamed(logger, lines, codes, progress=progress), Repo(str(root)) as repo:
            ran = repo.reproduce(targets=[target], single_item=True)
    except ReproductionError as exc:
        raise StageFailed(target, codes[-1] if codes else None, lines) from exc
    finally:
        os.chdir(cwd)
    return bool(ran)


def run_experiment(root: Path, targets: list[str], overrides: dict[str, str], name: str | None,
                   logger: logging.Logger | logging.LoggerAdapter,
                   env: dict[str, str] | None = None, progress: Progress | None = None,
                   each_stage: EachStage | None = None) -> tuple[str, str]:
    """`dvc exp run --temp -S k=v ... [--name]` over the targets; returns (name, commit).

    --temp, not the workspace: DVC copies the committed workspace (plus uncommitted changes)
    into .dvc/tmp/exps, runs the stages there and records the result as an experiment ref
    (`dvc exp show`, `dvc exp apply NAME`), so params.yaml, dvc.lock and the outputs the
    schedule runs on stay as committed. Chosen over the queue (a Celery worker to run and
    watch, and its output no longer streams to this flow's log: the temp executor runs in this
    process) and over a git worktree by hand (DVC would not list it as an experiment).
    `env`: variables set while it runs, e.g. absolute store paths (the stages' working
    directory is the temporary copy, which is deleted afterwards). `each_stage` wraps each
    stage DVC reproduces (skipped or run) in the temporary copy."""
    from dvc.repo import Repo

    lines: list[str] = []
    codes: list[int] = []
    stages: list[str] = []
    cwd, saved_env = os.getcwd(), {k: os.environ.get(k) for k in (env or {})}
    os.chdir(root)
    os.environ.update(env or {})
    try:
        with _streamed(logger, lines, codes, stages, progress, each_stage), Repo(str(root)) as repo:
            params = [f"{key}={value}" for key, value in overrides.items()]
            results = repo.experiments.run(targets=targets, params=params, name=name, tmp_dir=True)
            for rev in results:
                return repo.experiments.get_exact_name([rev]).get(rev) or rev[:7], rev
    except Exception as exc:
        failed = next((e for e in _causes(exc) if isinstance(e, StageFailed)), None)
        if failed:  # raised in the stage's wrapper: it names the stage
            raise failed from exc
        if codes and codes[-1] != 0:
            # the stage DVC was running when the command failed
            raise StageFailed(stages[-1] if stages else " ".join(targets), codes[-1], lines) from exc
        raise
    finally:
        os.chdir(cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    raise RuntimeError(f"dvc exp run {' '.join(targets)} recorded no experiment")


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def show_file(root: Path, rev: str, path: str) -> str:
    """A file as an experiment's commit holds it (its metrics and verdict: --temp leaves the
    workspace's copies alone)."""
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True,
                          check=True).stdout
