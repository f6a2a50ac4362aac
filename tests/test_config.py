"""params.yaml -> typed config: the shipped file parses; mistakes fail with a suggestion."""

from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_parse_and_cover_every_pipeline_task():
    params = load_params(ROOT / "params.yaml")
    assert params.pipeline.tasks, "pipeline.tasks must not be empty"
    for task in params.pipeline.tasks:
        assert params.task(task).gate.thresholds, f"{task} has no gate thresholds"


@pytest.mark.parametrize(
    ("path", "typo", "suggestion"),
    [
        ((), "sed", "seed"),
        (("tracking",), "experment", "experiment"),
        (("tasks", "classification", "train"), "epoch", "epochs"),
        (("tasks", "classification", "data"), "num_image", "num_images"),
        (("tasks", "classification", "model"), "arh", "arch"),
    ],
)
def test_unknown_key_fails_with_closest_valid_key(path, typo, suggestion):
    raw = shipped()
    section = raw
    for key in path:
        section = section[key]
    section[typo] = 1
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert ".".join((*path, typo)) in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_task_and_unconfigured_pipeline_task_are_errors():
    raw = shipped()
    raw["tasks"]["clasification"] = raw["tasks"].pop("classification")
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        parse_params(raw)


def test_split_fractions_must_sum_to_one():
    raw = shipped()
    raw["tasks"]["classification"]["data"]["splits"] = {"train": 0.5, "val": 0.1, "test": 0.1}
    with pytest.raises(ConfigError, match="sum to 1"):
        parse_params(raw)


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="repository root"):
        load_params(tmp_path / "params.yaml")


def test_every_params_dependency_in_dvc_yaml_exists_for_every_task():
    """DVC fails a stage whose declared params key is missing from params.yaml; catch it here
    instead of mid-pipeline (e.g. a new per-task section added for one task only)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    raw = shipped()
    missing = []
    for task in raw["tasks"]:  # every configured task, listed in pipeline.tasks or not
        for name, stage in stages.items():
            for key in stage.get("params", []):
                node = raw
                for part in key.replace("${item.task}", task).split("."):
                    if not isinstance(node, dict) or part not in node:
                        missing.append(f"{name}@{task}: {key}")
                        break
                    node = node[part]
    assert not missing, f"params.yaml lacks keys that dvc.yaml depends on: {missing}"
