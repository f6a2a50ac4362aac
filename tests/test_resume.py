"""When a rerun of the train stage resumes an interrupted training and when it starts fresh
(components.training.resume), without Ray: the fingerprint, the marker next to the checkpoints, the
finished run moved aside, the lock against a concurrent stage with the same inputs. The
resumed training itself is in tests/test_ray.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.config import parse_params
from components.training import resume
from tests.conftest import ROOT

TASK = "classification"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a task's manifest (what the fingerprint reads) as the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / TASK).mkdir(parents=True)
    (tmp_path / "data" / TASK / "manifest.csv").write_text("path,sha256\na.png,1234\n")
    return tmp_path


def inputs(**train) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tasks"][TASK]["train"].update(train)
    params = parse_params(raw)
    return resume.training_inputs(params, TASK, params.task(TASK))


def interrupted(storage: Path, run_id: str, **train) -> resume.Slot:
    """A training that wrote its marker and one checkpoint (Ray's snapshot), then died."""
    with resume.slot(str(storage), TASK, inputs(**train)) as slot:
        slot.start(run_id)
        (storage / slot.name / resume.SNAPSHOT).write_text("{}")
    return slot


def test_same_inputs_same_fingerprint_other_params_or_data_another(workdir):
    base = resume.fingerprint(inputs())
    assert resume.fingerprint(inputs()) == base
    assert resume.fingerprint(inputs(lr=0.5)) != base
    (workdir / "data" / TASK / "manifest.csv").write_text("path,sha256\na.png,5678\n")
    assert resume.fingerprint(inputs()) != base


def test_an_interrupted_training_is_resumed_with_its_mlflow_run(workdir):
    storage = workdir / "ray_results"
    first = interrupted(storage, "run0123456789")
    with resume.slot(str(storage), TASK, inputs()) as again:
        assert (again.name, again.resume_run_id) == (first.name, "run0123456789")


def test_other_params_start_fresh(workdir):
    storage = workdir / "ray_results"
    first = interrupted(storage, "run0123456789")
    with resume.slot(str(storage), TASK, inputs(lr=0.5)) as other:
        assert other.name != first.name and other.resume_run_id is None


def test_no_checkpoint_yet_starts_fresh(workdir):
    storage = workdir / "ray_results"
    with resume.slot(str(storage), TASK, inputs()) as slot:
        slot.start("run0123456789")  # died before Ray Train saved a checkpoint
    with resume.slot(str(storage), TASK, inputs()) as again:
        assert again.resume_run_id is None


def test_a_finished_training_is_moved_aside_and_not_resumed(workdir):
    storage = workdir / "ray_results"
    with resume.slot(str(storage), TASK, inputs()) as slot:
        slot.start("run0123456789")
        (storage / slot.name / resume.SNAPSHOT).write_text("{}")
        assert slot.finish("run0123456789") == f"{TASK}-run01234"
    assert (storage / f"{TASK}-run01234" / resume.MARKER).is_file() and not (storage / slot.name).exists()
    with resume.slot(str(storage), TASK, inputs()) as again:
        assert again.resume_run_id is None


def test_a_concurrent_stage_with_the_same_inputs_trains_elsewhere(workdir):
    storage = workdir / "ray_results"
    with resume.slot(str(storage), TASK, inputs()) as holder, resume.slot(str(storage), TASK, inputs()) as other:
        assert other.name != holder.name and other.resume_run_id is None
