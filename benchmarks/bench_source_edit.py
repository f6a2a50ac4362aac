"""Editing one image of a user dataset reruns prepare: `dvc status` before and after the edit,
and how long it takes on a dataset of N images (DVC's state database rehashes only what
changed). Usage: python benchmarks/bench_source_edit.py [N] [SIZE]"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import BIN, make_workspace, stage_env, tiny_params  # noqa: E402
from PIL import Image  # noqa: E402

from components.config import load_params  # noqa: E402
from components.data import shapes  # noqa: E402
from components.stages import prepare  # noqa: E402


def dvc(ws: Path, *args: str) -> tuple[str, float]:
    start = time.perf_counter()
    out = subprocess.run([str(BIN / "dvc"), *args], cwd=ws, capture_output=True, text=True, env=stage_env(), check=True).stdout
    return out.strip(), time.perf_counter() - start


def main(n: int, size: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    user = shapes.generate(tmp / "user", shapes.ShapesConfig(num_images=n, image_size=size, seed=3))

    def edit(params):
        params = tiny_params(params)
        params["tasks"]["classification"]["data"].update(source="path", path=str(user), format="canonical")
        return params

    ws = make_workspace(tmp / "ws", edit)
    os.chdir(ws)
    start = time.perf_counter()
    prepare.run(load_params(ws / "params.yaml"), "classification")
    print(f"prepare ({n} images of {size} px): {time.perf_counter() - start:.1f} s")
    _, took = dvc(ws, "commit", "-f", "prepare@classification")
    print(f"dvc commit prepare@classification: {took:.1f} s")
    out, took = dvc(ws, "status", "prepare@classification")
    print(f"dvc status before the edit ({took:.1f} s): {out}")
    image = user / "images" / "00007.png"
    Image.open(image).rotate(90).save(tmp / "edited.png")
    os.replace(tmp / "edited.png", image)
    out, took = dvc(ws, "status", "prepare@classification")
    print(f"dvc status after editing {image.name} ({took:.1f} s):\n{out}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, int(sys.argv[2]) if len(sys.argv) > 2 else 64)
