"""Start-up cost of the stage processes: what each DVC stage pays before its first line of work.

Each stage is a fresh process (`cvops stage <name>`), so its imports are paid every time. Measured
with a whole-process timer (wall and CPU of the child), interleaved repeats, the minimum kept (the
machine is shared: the minimum is the least disturbed). `--tree` runs another checkout's code with
this environment (e.g. a worktree of an older commit, for a before/after).

    uv run python benchmarks/bench_startup.py [--repeats 5] [--tree /path/to/old/checkout]
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


def child_seconds(cmd: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(cwd)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code is timed")
    args = parser.parse_args()
    old = not (args.tree / "components" / "stages").is_dir()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        params = Path(scratch) / "params.yaml"
        params.write_text((args.tree / "params.yaml").read_text())
        for _ in range(args.repeats):
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
    print(f"{'stage start-up':40s} {'wall s':>8s} {'cpu s':>8s}   ({args.tree}, min of {args.repeats})")
    for name, (wall, cpu) in best.items():
        print(f"{name:40s} {wall:8.2f} {cpu:8.2f}")


if __name__ == "__main__":
    main()
