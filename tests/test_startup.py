"""Small commands start fast because of what they import, checked in a fresh process (a
timing would fail on a loaded machine and pass on a slow import that happens to be cached):
`cvops --help`, every subcommand's --help and `cvops tasks` load no torch, MLflow, Ray or
Prefect. benchmarks/bench_startup.py measures the seconds."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import BIN, ROOT

HEAVY = ("torch", "torchvision", "torchmetrics", "lightning", "mlflow", "ray", "prefect", "pandas", "great_expectations",
         "dvc", "onnxruntime")

PROBE = """
import contextlib, io, json, sys
from components.cli import build_parser, main
from components.tasks import TASKS
for name in TASKS:  # what `cvops tasks` reads: the monitor and the zoo's names
    assert TASKS[name].monitor and list(TASKS[name].models)
parser = build_parser()
commands = [[]] + [[c] for c in parser._subparsers._group_actions[0].choices]
for command in commands:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*command, "--help"])
with contextlib.redirect_stdout(io.StringIO()):
    main(["tasks"])
print(json.dumps({"heavy": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY)), "commands": len(commands)}))
"""


def test_help_and_tasks_import_no_heavy_library():
    code = f"HEAVY = {HEAVY!r}\n{PROBE}"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["commands"] > 10, "every subcommand's --help was built"
    assert report["heavy"] == [], f"a small command imports {report['heavy']}: import it inside the function that needs it"


def test_cvops_tasks_prints_every_task_and_no_terminal_codes():
    result = subprocess.run([str(BIN / "cvops"), "tasks"], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["classification", "detection", "segmentation"]
    assert "small_cnn" in lines[0] and "fcos_small" in lines[1] and "unet_small" in lines[2]
    assert "\x1b[" not in result.stdout + result.stderr and result.stderr == ""
