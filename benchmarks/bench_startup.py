"""Start-up cost of the stage processes (what each DVC stage pays before its first line of work)
and of the small commands a user types (`cvops --help`, `cvops tasks`, `history`, `lineage`).

Each stage is a fresh process (`cvops stage <name>`), so its imports are paid every time. Measured
with a whole-process timer (wall and CPU of the child), interleaved repeats, the minimum kept (the
machine is shared: the minimum is the least disturbed). `--tree` runs another checkout's code with
this environment (e.g. a worktree of an older commit, for a before/after). `--workspace` is a
folder with a params.yaml and an MLflow store holding registered models (e.g. after `make
demo`): the registry commands run there; without it they are left out.

    uv run python benchmarks/bench_startup.py [--repeats 5] [--tree /path/to/old/checkout] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the import a stage process makes before its work (`cvops stage X` imports components.cli, then the stage)
STAGES = {name: f"import components.cli, components.stages.{name}" for name in ("prepare", "validate", "tune", "train", "evaluate", "promote")}
OLD_NAMES = {f"components.stages.{n}": f"components.{n}" for n in STAGES}  # before the layout change
# whole `cvops` processes (python -m components.cli, what the console script runs); the registry
# ones need --workspace
COMMANDS = {"cvops --help": ["--help"], "cvops predict --help": ["predict", "--help"], "cvops tasks": ["tasks"]}
REGISTRY_COMMANDS = {"cvops history classification": ["history", "classification"],
                     "cvops lineage classification": ["lineage", "classification"]}


def child_seconds(cmd: list[str], cwd: Path, tree: Path | None = None) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(tree or cwd)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code is timed")
    parser.add_argument("--workspace", type=Path, help="params.yaml + MLflow store with registered models")
    parser.add_argument("--commands-only", action="store_true", help="only the cvops commands, not the stages")
    args = parser.parse_args()
    old = not (args.tree / "components" / "stages").is_dir()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        params = Path(scratch) / "params.yaml"
        params.write_text((args.tree / "params.yaml").read_text())
        commands = {name: (argv, args.tree) for name, argv in COMMANDS.items()}
        if args.workspace:
            commands |= {name: (argv, args.workspace) for name, argv in REGISTRY_COMMANDS.items()}
        for _ in range(args.repeats):
            for name, (argv, cwd) in commands.items():
                wall, cpu = child_seconds([sys.executable, "-m", "components.cli", *argv], cwd, args.tree)
                best[name] = min(best.get(name, (wall, cpu)), (wall, cpu))
            if args.commands_only:
                continue
            for name, code in STAGES.items():
                for new, was in OLD_NAMES.items():
                    code = code.replace(new, was) if old else code
                wall, cpu = child_seconds([sys.executable, "-c", code], args.tree)
                best[name] = min(best.get(name, (wall, cpu)), (wall, cpu))
            # the tune stage with tuning off, whole process: start-up plus its (tiny) work
            cmd = [sys.executable, "-c", "import sys; from components.cli import main; main(sys.argv[1:])",
                   "stage", "tune", "--task", "classification", "--params", str(params)]
            wall, cpu = child_seconds(cmd, args.tree)  # writes the tree's reports/classification/tune.json
            best["tune (tuning off), whole process"] = min(best.get("tune (tuning off), whole process", (wall, cpu)), (wall, cpu))
    print(f"{'process':40s} {'wall s':>8s} {'cpu s':>8s}   ({args.tree}, min of {args.repeats}, load {os.getloadavg()[0]:.1f})")
    for name, (wall, cpu) in best.items():
        print(f"{name:40s} {wall:8.2f} {cpu:8.2f}")


if __name__ == "__main__":
    main()
