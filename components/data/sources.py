"""`sources/<task>`: the prepare stage's DVC dependency on where the task's data comes from.

dvc.yaml cannot name `tasks.<task>.data.path` in a matrix stage (DVC has no nested
interpolation: `${tasks.${item.task}.data.path}` does not parse), so prepare depends on a
fixed path per task, `sources/<task>`, a symbolic link that prepare points at the data's
origin: the user's dataset (`data.source: path`; DVC follows the link and hashes the files
behind it, so editing one image makes `dvc status` flag `prepare@<task>` and nothing else
upstream) or the generator module of a built-in dataset. The links are committed (a fresh
clone, `dvc exp run --temp` and `dvc repro` find them); after `data.path` changes, prepare
re-points the link while it runs and DVC records the new target's hash in dvc.lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.errors import ConfigError

SOURCES = Path("sources")
GENERATORS = {"shapes": Path("components/data/shapes.py"), "digits": Path("components/data/digits.py")}


def source_link(task: str) -> Path:
    return SOURCES / task


def wanted_target(source: str, path: str | None, link: Path) -> str:
    """What `link` should point at: relative inside the repository (clones move it), the
    absolute dataset root outside it."""
    target = GENERATORS[source] if source in GENERATORS else Path(path)
    resolved = target.resolve()
    try:
        return os.path.relpath(resolved.relative_to(Path.cwd().resolve()), link.parent)
    except ValueError:
        return str(resolved)


def link_source(task: str, source: str, path: str | None) -> str | None:
    """Point sources/<task> at the task's data; returns the new target when it changed."""
    link = source_link(task)
    target = wanted_target(source, path, link)
    if link.is_symlink() and os.readlink(link) == target:
        return None
    if link.is_dir() and not link.is_symlink():
        raise ConfigError(f"{link} is a directory: it must be the link prepare manages (to data.path); move it away")
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    os.symlink(target, link)
    return target
