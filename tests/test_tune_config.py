"""The tune stage's config: search space in params.yaml, overrides applied to train, the
tuning-off output, and the Ray Job command line (no Ray cluster needed)."""

from __future__ import annotations

import json

import pytest
import yaml

from components.config import ConfigError, parse_params
from components.runtime import submit
from components.stages import tune
from components.training import tuned as tuning
from tests.conftest import ROOT

TASK = "classification"


def params_with(**tune_section):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tasks"][TASK]["tune"].update(tune_section)
    return parse_params(raw)


def test_default_search_space_samples_train_keys():
    from ray import tune as ray_tune

    space = tune.search_space(params_with().task(TASK))
    assert set(space) == {"train.lr", "train.weight_decay", "train.batch_size"}
    assert isinstance(space["train.batch_size"], ray_tune.search.sample.Categorical)
    assert space["train.lr"].lower == pytest.approx(0.0003)


@pytest.mark.parametrize("space, message", [
    ({"train.lrr": {"type": "uniform", "low": 0, "high": 1}}, "not a train.<key> or model.<key>"),
    ({"optimizer.lr": {"type": "uniform", "low": 0, "high": 1}}, "not a train.<key> or model.<key>"),
    ({"train.lr": {"type": "loguniform", "low": 1, "high": 0.1}}, "'low' < 'high'"),
    ({"model.arch": {"type": "choice"}}, "non-empty 'values'"),
])
def test_bad_search_space_fails_with_the_rule(space, message):
    with pytest.raises(ConfigError, match=message):
        params_with(search_space=space)


def test_overrides_apply_and_are_validated():
    cfg = params_with().task(TASK)
    tuned = tuning.apply_overrides(cfg, {"train.lr": 0.02, "model.arch": "resnet18"})
    assert (tuned.train.lr, tuned.model.arch, tuned.train.epochs) == (0.02, "resnet18", cfg.train.epochs)
    with pytest.raises(ValueError, match="greater than 0"):
        tuning.apply_overrides(cfg, {"train.lr": -1})


def test_tuning_off_writes_no_overrides_and_train_reads_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_with(enabled=False)
    out = tune.run(params, TASK)
    assert json.loads(out.read_text()) == {"tuned": False, "best_config": {}, "run_id": None}
    cfg, tuned = tuning.tuned_config(params, TASK)
    assert cfg == params.task(TASK) and tuned["tuned"] is False


def test_tuning_on_without_a_search_space_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="search_space is empty"):
        tune.run(params_with(enabled=True, search_space={}), TASK)


def test_submit_builds_a_ray_job_of_the_stage_command():
    cmd = submit.command("train", TASK, "http://127.0.0.1:8265")
    assert cmd[:3] == ["ray", "job", "submit"] and cmd[cmd.index("--address") + 1] == "http://127.0.0.1:8265"
    assert cmd[cmd.index("--submission-id") + 1].startswith(f"cvops-train-{TASK}-")
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "components.cli", "stage", "train", "--task", TASK]
    runtime_env = submit.runtime_env()
    assert runtime_env["env_vars"]["RAY_AUTH_MODE"] == "token" and ".venv" in runtime_env["excludes"]
