"""The prepare stage: materialise the task's dataset in its canonical layout under
data/<task>/ (built-in shapes or digits, or a user's dataset) and write its manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.config import Params
from components.data import digits, shapes
from components.data.manifest import write_manifest
from components.paths import StagePaths
from components.tasks import get_task


def _copy_user_dataset(source: Path, out: Path) -> None:
    """Copy a user's dataset, refusing links that could point outside its root."""
    source = source.resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"data.path '{source}' is not a directory: point data.path at the dataset root")
    for path in source.rglob("*"):
        if path.is_symlink():
            raise ValueError(f"{path}: symbolic links are not followed; copy the file into the dataset instead")
    shutil.copytree(source, out, dirs_exist_ok=True)


def run(params: Params, task: str) -> Path:
    cfg, paths = params.task(task).data, StagePaths(task)
    out = paths.data
    if out.exists():
        shutil.rmtree(out)
    splits = (cfg.splits.train, cfg.splits.val, cfg.splits.test)
    if cfg.source == "shapes":
        shapes.generate(out, shapes.ShapesConfig(
            num_images=cfg.num_images, image_size=cfg.image_size, objects_per_image=cfg.objects_per_image,
            minority_fraction=cfg.minority_fraction, splits=splits, seed=params.seed,
        ))
    elif cfg.source == "digits":
        digits.export(out, splits, params.seed)
    else:
        _copy_user_dataset(Path(cfg.path), out)
    rows = write_manifest(out, get_task(task), paths.manifest)
    print(f"prepared {rows} images ({cfg.source}) in {out}/, manifest {paths.manifest}")
    return out
