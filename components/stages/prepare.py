"""The prepare stage: materialise the task's dataset in its canonical layout under
data/<task>/ (built-in shapes or digits, or a user's dataset: `data.source: path`, in the
formats of the README's Data section) and write its manifests. data/<task> is this stage's DVC output, so an
ingested dataset is versioned and pushed like the built-in ones."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.config import Params
from components.data import digits, shapes
from components.data.manifest import write_manifest
from components.data.safepath import inside_root
from components.errors import DataContractError
from components.paths import StagePaths
from components.tasks import get_task


def check_user_dataset(source: Path) -> Path:
    """The dataset root, resolved, once no link in it leads outside it (such links are refused,
    not followed: a dataset must not pull in files from elsewhere on the machine)."""
    source = Path(source).resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"data.path '{source}' is not a directory: point data.path at the dataset root")
    for path in source.rglob("*"):
        if path.is_symlink() and inside_root(source, str(path.relative_to(source))) is None:
            raise DataContractError(
                f"{path}: symbolic link to {path.readlink()} leaves the dataset root {source} (rule: paths "
                "inside the dataset root); copy the file into the dataset instead"
            )
    return source


def _copy_user_dataset(source: Path, out: Path) -> None:
    """Copy a checked user dataset; links inside its root are copied as the files they name."""
    shutil.copytree(check_user_dataset(source), out, dirs_exist_ok=True)


def _shard(params: Params, out: Path, task: str, shard_size_mb: float, manifest: Path) -> int:
    """scale (issue 18): pack `out` into shards, then the manifests with Ray Data on the cluster."""
    from components.data import ray_data, shards
    from components.runtime import ray_cluster

    count = shards.write_shards(out, get_task(task), shard_size_mb)
    _, started_here = ray_cluster.connect(params)
    try:
        info = ray_data.write_manifest(out, get_task(task), manifest)
    finally:
        if started_here:
            ray_cluster.shutdown()
    print(f"{count} shards in {out}/shards/; manifest by Ray Data on {len(info['nodes'])} node(s): {info['nodes']}")
    return info["images"]


def run(params: Params, task: str) -> Path:
    cfg, paths = params.task(task).data, StagePaths(task)
    out = paths.data
    if cfg.source == "path":
        check_user_dataset(Path(cfg.path))  # before anything stored is removed
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
    if cfg.storage == "shards":  # scale (issue 18): tar shards + Parquet index, manifests through Ray Data
        rows = _shard(params, out, task, cfg.shard_size_mb, paths.manifest)
    else:
        rows = write_manifest(out, get_task(task), paths.manifest)
    print(f"prepared {rows} images ({cfg.source}) in {out}/, manifest {paths.manifest}")
    return out
