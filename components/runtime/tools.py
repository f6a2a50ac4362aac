"""Where subprocesses find the project's tools (cvops, dvc, ray, prefect, mlflow): the running
interpreter's environment first, so `.venv/bin/cvops run` works without activating it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

BIN = Path(sys.executable).parent  # the project environment's bin/


def with_tools(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with BIN first on PATH."""
    env = dict(os.environ if env is None else env)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN]
    env["PATH"] = os.pathsep.join([str(BIN), *rest])
    return env
