"""Bad inputs through the CLI and each stage: exit 2 (configuration) or 3 (data contract), a
message that names the file and the fix, and never a traceback. One table; each row is what
a user typed or wrote, run in a scratch directory holding this project's params.yaml."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from components.cli import main
from tests.conftest import BIN, ROOT, stage_env


def _set(path, dotted: str, value) -> None:
    params = yaml.safe_load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _yaml_syntax(path) -> None:
    path.write_text(path.read_text().replace("tasks:", "tasks: [", 1))


def _custom(path) -> None:
    shutil.copy2(path, path.with_name("custom.yaml"))


CASES = {
    # name: (edit of params.yaml, argv, exit code, words the message must hold)
    "yaml syntax": (_yaml_syntax, ["stage", "prepare", "--task", "classification"], 2, ["params.yaml", "line", "fix"]),
    "boolean epochs": (lambda p: _set(p, "tasks.classification.train.epochs", True),
                       ["stage", "train", "--task", "classification"], 2, ["params.yaml", "epochs", "give a number"]),
    "boolean lr": (lambda p: _set(p, "tasks.classification.train.lr", False),
                   ["stage", "train", "--task", "classification"], 2, ["lr", "give a number"]),
    "string batch size": (lambda p: _set(p, "tasks.classification.train.batch_size", "many"),
                          ["stage", "train", "--task", "classification"], 2, ["batch_size", "integer"]),
    "misspelled key": (lambda p: _set(p, "tasks.classification.train.epoch", 3),
                       ["stage", "train", "--task", "classification"], 2, ["epoch", "did you mean 'epochs'"]),
    "task typo, other params file": (_custom, ["stage", "train", "--task", "clasification", "--params", "custom.yaml"], 2,
                                     ["custom.yaml", "did you mean 'classification'"]),
    "missing params file": (None, ["stage", "prepare", "--task", "classification", "--params", "nope.yaml"], 2,
                            ["nope.yaml", "not found"]),
    "unknown stage": (None, ["stage", "trian", "--task", "classification"], 2, ["invalid choice", "train"]),
    "run task typo": (None, ["run", "--tasks", "detecton"], 2, ["did you mean 'detection'"]),
    "run bad --set": (None, ["run", "--set", "epochs"], 2, ["KEY=VALUE"]),
    "submit task typo": (None, ["submit", "train", "--task", "segmentaton", "--dry-run"], 2, ["did you mean 'segmentation'"]),
    "compare task typo": (None, ["compare", "clasification"], 2, ["did you mean 'classification'"]),
    "compare outside a DVC repository": (None, ["compare", "classification"], 2, ["not inside of a DVC repository", "fix"]),
    "dataset path missing": (lambda p: (_set(p, "tasks.classification.data.source", "path"),
                                        _set(p, "tasks.classification.data.path", "/no/such/dir")),
                             ["stage", "prepare", "--task", "classification"], 2, ["/no/such/dir", "data.path"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_message_and_an_exit_code(case, tmp_path, monkeypatch, capsys):
    edit, argv, code, words = CASES[case]
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    if edit:
        edit(tmp_path / "params.yaml")
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        got = exc.code
    out = capsys.readouterr()
    text = out.out + out.err
    assert got == code, text
    assert "Traceback" not in text
    missing = [w for w in words if w not in text]
    assert not missing, f"message lacks {missing}:\n{text}"


def test_installed_cvops_prints_no_traceback_for_a_yaml_error(tmp_path):
    """The real entry point, once: what a user sees in a shell."""
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    _yaml_syntax(tmp_path / "params.yaml")
    result = subprocess.run([str(BIN / "cvops"), "stage", "validate", "--task", "classification"], cwd=tmp_path,
                            env=stage_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "params.yaml: line" in result.stderr, result.stderr
