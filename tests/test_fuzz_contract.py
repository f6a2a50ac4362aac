"""A seeded mutation loop over the canonical fixtures: the label files of each task's
dataset are broken at random (bytes, JSON values, CSV cells, BOMs, encodings) and prepare's
checks plus the contract must either accept the dataset or refuse it with exit code 2 or 3
and a message: never a traceback (any other exception fails the test)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from components.config import ContractConfig
from components.data import shapes
from components.errors import ConfigError, DataContractError, exit_code
from components.stages.prepare import write_checked_manifest
from components.stages.validate import report, validate_dataset
from components.tasks import get_task

LABEL_FILES = {"classification": ["labels.csv"], "segmentation": ["labels.csv", "dataset.json"],
               "detection": ["annotations/train.json", "annotations/val.json", "dataset.json"]}
ODD_VALUES = [None, "", "x", -1, 0, 1e309, float("nan"), [], {}, [1, 2], True, 10**20, "../../etc/passwd"]


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> Path:
    cfg = shapes.ShapesConfig(num_images=24, image_size=16, objects_per_image=(1, 2), minority_fraction=0.3, seed=5)
    return shapes.generate(tmp_path_factory.mktemp("fuzz") / "shapes", cfg)


def _mutate_json(value, rng: random.Random):
    """One random change somewhere inside a JSON value: a key dropped, a value replaced, an
    entry duplicated."""
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.25:
            del value[key]
        elif roll < 0.5:
            value[key] = rng.choice(ODD_VALUES)
        else:
            value[key] = _mutate_json(value[key], rng)
    elif isinstance(value, list) and value:
        i = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.2:
            value.append(json.loads(json.dumps(value[i])))
        elif roll < 0.4:
            value[i] = rng.choice(ODD_VALUES)
        else:
            value[i] = _mutate_json(value[i], rng)
    else:
        return rng.choice(ODD_VALUES)
    return value


def mutate(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    kind = rng.choice(["truncate", "byte", "bom", "latin1", "utf16", "structure", "structure", "structure"])
    if kind == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))])
    elif kind == "byte":
        i = rng.randrange(len(data))
        path.write_bytes(data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :])
    elif kind == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + data)
    elif kind == "latin1":
        path.write_bytes(data.replace(b"e", b"\xe9", 1))
    elif kind == "utf16":
        path.write_bytes(data.decode().encode("utf-16"))
    elif path.suffix == ".json":
        path.write_text(json.dumps(_mutate_json(json.loads(data), rng)))
    else:
        lines = data.decode().splitlines()
        i = rng.randrange(len(lines))
        cells = lines[i].split(",")
        j = rng.randrange(len(cells))
        cells[j] = rng.choice(["", "  padded  ", "a,b", '"', "x" * 300, "../x.png", "nan", "train", "\x00"])
        if rng.random() < 0.3:
            cells.pop(rng.randrange(len(cells)))
        lines[i] = ",".join(cells)
        path.write_text("\n".join(lines))
    return kind


def outcome(root: Path, task: str, full: bool) -> str:
    """'accepted' or the exit code, with a message; any other exception propagates."""
    try:
        write_checked_manifest(root, task, root / "manifest.csv")
        if full:
            rules, summary = validate_dataset(root, root / "manifest.csv", get_task(task), ContractConfig())
            if not summary["success"]:
                raise DataContractError(report(rules, root))
        return "accepted"
    except (DataContractError, ConfigError) as exc:
        assert str(exc).strip(), "an error without a message"
        assert exit_code(exc) in (2, 3)
        return f"exit {exit_code(exc)}"


def run_mutations(canonical: Path, tmp_path: Path, seed: int, count: int, full_every: int) -> dict[str, int]:
    rng, seen = random.Random(seed), {}
    for n in range(count):
        task = rng.choice(list(LABEL_FILES))
        root = shutil.copytree(canonical, tmp_path / f"m{n}")
        name = rng.choice(LABEL_FILES[task])
        kind = mutate(root / name, rng)
        result = outcome(root, task, full=n % full_every == 0)
        seen[f"{kind}->{result}"] = seen.get(f"{kind}->{result}", 0) + 1
        shutil.rmtree(root)
    return seen


def test_mutated_label_files_never_give_a_traceback(canonical, tmp_path):
    seen = run_mutations(canonical, tmp_path, seed=0, count=60, full_every=20)
    assert any(k.endswith("exit 3") for k in seen), seen  # the loop does break things


@pytest.mark.slow
def test_many_mutated_label_files_never_give_a_traceback(canonical, tmp_path):
    seen = run_mutations(canonical, tmp_path, seed=1, count=300, full_every=25)
    assert any(k.endswith("exit 3") for k in seen), seen
