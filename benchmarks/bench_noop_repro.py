"""Wall time of a pipeline run that has nothing to do: `dvc repro` and `cvops run` (the
Prefect flow over the same stages, with its temporary Prefect server) on a workspace where
every stage already ran, so each stage is only hashed and skipped.

    python benchmarks/bench_noop_repro.py [--workspace PATH] [--repeat 3]

Without --workspace it builds one first (tests' make_workspace: classification only, tiny
data), which is not timed. Checks that no stage ran, prints one JSON line and markdown rows
for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN, make_workspace, stage_env, tiny_params  # noqa: E402

TASK = "classification"
COMMANDS = {"dvc repro": [str(BIN / "dvc"), "repro"], "cvops run": [str(BIN / "cvops"), "run"]}


def one_task(params: dict) -> dict:
    params = tiny_params(params)
    params["pipeline"]["tasks"] = [TASK]
    return params


def timed(ws: Path, name: str) -> float:
    """Seconds of one run of the command; fails if it ran a stage."""
    env = stage_env()
    env.pop("PREFECT_API_URL", None)  # cvops run as a user gets it: a temporary Prefect server
    started = time.perf_counter()
    result = subprocess.run(COMMANDS[name], cwd=ws, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    if result.returncode != 0 or "Running stage '" in output:
        raise SystemExit(f"{name}: exit {result.returncode} or a stage ran:\n{output[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace where the pipeline already ran")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "tmp" if (ROOT / "tmp").exists() else None) as tmp:
        ws = args.workspace
        if ws is None:
            ws = make_workspace(Path(tmp) / "ws", edit=one_task)
            build = subprocess.run(COMMANDS["dvc repro"], cwd=ws, env=stage_env(), capture_output=True, text=True)
            if build.returncode:
                raise SystemExit(build.stdout[-3000:] + build.stderr[-3000:])
        if not (ws / "prefect.yaml").exists():  # a clone has it; cvops run reads it (cvops up's pool)
            shutil.copy2(ROOT / "prefect.yaml", ws / "prefect.yaml")
        tasks = yaml.safe_load((ws / "params.yaml").read_text())["pipeline"]["tasks"]
        stages = len(yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]) * len(tasks)
        results = {name: [timed(ws, name) for _ in range(args.repeat)] for name in COMMANDS}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    print(json.dumps({"stages": stages, "machine": machine, **{k: [round(s, 2) for s in v] for k, v in results.items()}}))
    for name, seconds in results.items():
        print(f"| no-change `{name}` on a built workspace ({stages} stages, all skipped), median of {args.repeat} "
              f"| {statistics.median(seconds):.1f} s (min {min(seconds):.1f}, max {max(seconds):.1f}) "
              f"| `python benchmarks/bench_noop_repro.py{''.join(' ' + a for a in sys.argv[1:])}` "
              f"| {machine} | {time.strftime('%Y-%m-%d')} |")


if __name__ == "__main__":
    main()
