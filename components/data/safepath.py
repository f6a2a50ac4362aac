"""Paths named by a dataset's annotations, kept inside the dataset root.

An annotation may say `../../etc/passwd`, an absolute path, or point at a symbolic link that
leads out of the dataset: none of these are read. (No task imports here, so task modules
can use it without an import cycle.)
"""

from __future__ import annotations

from pathlib import Path

ESCAPES = "path escapes the dataset root (absolute, '..' or a link out): refused, not read"


def inside_root(root: Path, rel_path: str) -> Path | None:
    """`root / rel_path` with links resolved, or None when it leaves `root` (or is empty)."""
    if not rel_path or Path(rel_path).is_absolute():
        return None
    try:
        base = Path(root).resolve()
        target = (base / rel_path).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte in the name
        return None
    return target if target.is_relative_to(base) else None
