"""What an evaluation's result depends on, as a short key: the test data's version, the
evaluate params and the evaluation code. The promotion gate reuses a champion's stored
evaluation when the keys match. Import-light: promote computes it without torch."""

from __future__ import annotations

import json
from pathlib import Path

from components.config import Params

EVALUATION_CODE = ("components/evaluation", "components/tasks")  # what computes metrics.json


def code_hash(roots: tuple[str, ...] = EVALUATION_CODE) -> str:
    """sha256 over the evaluation's source files (path and content), short."""
    import hashlib

    digest = hashlib.sha256()
    base = Path(__file__).resolve().parents[2]
    for root in roots:
        for path in sorted((base / root).rglob("*.py")):
            digest.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def evaluation_key(params: Params, task: str, data_version: str) -> str:
    """Same key, same metrics.json: the test data's DVC hash, the evaluate params (and the
    seed their subsamples draw from) and the evaluation code. '' when the data has no DVC
    hash yet (then nothing stored is reused)."""
    import hashlib

    if not data_version:
        return ""
    ev = params.task(task).evaluate.model_dump(mode="json")
    blob = json.dumps({"data": data_version, "evaluate": ev, "seed": params.seed, "code": code_hash()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def files_hash(root: Path) -> str:
    """sha256 over a data folder's files (path and content): the data version where dvc.lock
    has none (a workspace DVC did not build)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
