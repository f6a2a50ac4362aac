"""The prepare stage: materialise the task's dataset in its canonical layout under
data/<task>/ (built-in shapes or digits, or a user's dataset: `data.source: path`, in the
formats of the README's Data section) and write its manifests. data/<task> is this stage's DVC output, so an
ingested dataset is versioned and pushed like the built-in ones; sources/<task>, a link to
where the data comes from (components/data/sources.py), is its DVC dependency, so editing
one image of a user dataset reruns prepare and what depends on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from components.config import Params
from components.data import digits, importers, label_files, shapes, sources
from components.data.manifest import write_manifest
from components.errors import ConfigError, DataContractError
from components.paths import StagePaths
from components.tasks import get_task


def check_user_dataset(source: Path) -> Path:
    """The dataset root, resolved, once every link in it names a file inside it. A link that
    leaves the root, loops, dangles or names a directory (a link to a parent makes a tree
    without end) is refused, not followed. os.walk does not follow directory links."""
    source = Path(source).resolve()
    if not source.is_dir():
        raise ConfigError(f"data.path '{source}' is not a directory: point data.path at the dataset root")
    for folder, dirs, files in os.walk(source, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            where = f"{path}: symbolic link to {os.readlink(path)}"
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                raise DataContractError(f"{where} loops or names nothing (rule: links inside the dataset root); "
                                        "remove the link or replace it by the file") from None
            if not target.is_relative_to(source):
                raise DataContractError(f"{where} leaves the dataset root {source} (rule: paths inside the dataset "
                                        "root); copy the file into the dataset instead")
            if target.is_dir():
                raise DataContractError(f"{where} names a directory (rule: no directory links: they duplicate or "
                                        "loop the tree); move the files there instead")
    return source


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # no second copy of the user's images on disk
    except OSError:
        shutil.copy2(source, target)


def ingest_user_dataset(source: Path, out: Path, fmt: str, fractions: tuple[float, float, float], seed: int,
                        near_distance: int) -> str:
    """A checked user dataset into `out` in the canonical layout: as it is (hard links, so
    the images are not stored twice) or through its format's importer. Returns what was done."""
    source = check_user_dataset(source)
    found = fmt
    if fmt == "auto":
        fmt, found = importers.detect(source)
    if fmt in ("canonical", "imagefolder"):
        shutil.copytree(source, out, dirs_exist_ok=True, copy_function=_link_or_copy)
    else:
        importers.import_dataset(fmt, source, out, fractions, seed, near_distance)
    return f"{found} -> {fmt}"


def write_checked_manifest(root: Path, task: str, manifest: Path, max_side: int | None = None) -> int:
    """Label files checked (label_files.py) before the task reads them, then the manifest.
    A reader error that the checks did not foresee still becomes a contract error naming
    the dataset, never a traceback."""
    problems = label_files.check_dataset(root)
    if problems:
        raise DataContractError(label_files.report(problems, root))
    try:
        return write_manifest(root, get_task(task), manifest, max_side=max_side)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, OSError, UnicodeError) as exc:
        missing = f"column or key {exc} missing" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise DataContractError(f"Data contract FAILED for {root}: its annotations could not be read as {task} "
                                f"data ({missing}).\n    fix: write them in the layout of the README's Data section") from None


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
    moved = sources.link_source(task, cfg.source, cfg.path)  # prepare's DVC dependency on the data's origin
    if moved:
        print(f"{sources.source_link(task)} -> {moved} (prepare's DVC dependency; commit the link)")
    if out.exists():
        shutil.rmtree(out)
    splits = (cfg.splits.train, cfg.splits.val, cfg.splits.test)
    near = params.task(task).contract.near_duplicate_distance
    if cfg.source == "shapes":
        shapes.generate(out, shapes.ShapesConfig(
            num_images=cfg.num_images, image_size=cfg.image_size, objects_per_image=cfg.objects_per_image,
            minority_fraction=cfg.minority_fraction, splits=splits, seed=params.seed, near_duplicate_distance=near,
        ))
    elif cfg.source == "digits":
        digits.export(out, splits, params.seed, near)
    else:
        how = ingest_user_dataset(Path(cfg.path), out, cfg.format, splits, params.seed, near or 0)
        print(f"data.path {cfg.path}: found {how}")
    if cfg.storage == "shards":  # scale (issue 18): tar shards + Parquet index, manifests through Ray Data
        rows = _shard(params, out, task, cfg.shard_size_mb, paths.manifest)
    else:
        rows = write_checked_manifest(out, task, paths.manifest, params.task(task).contract.max_size)
    print(f"prepared {rows} images ({cfg.source}) in {out}/, manifest {paths.manifest}")
    return out
