"""Pretrained backbones from local files only: torchvision's weight names resolved in
$TORCH_HOME/hub/checkpoints with the file's hash prefix checked, or model.weights_path; a
missing file names itself and where it comes from; training starts from the weights."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models._api import Weights

from components.errors import ConfigError
from components.tasks import get_task
from components.tasks.nets import load_pretrained, weights_file


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "torch" / "hub" / "checkpoints"


def known_state() -> dict[str, torch.Tensor]:
    """A resnet18 state dict with recognisable values (the test's own 'pretrained' file)."""
    torch.manual_seed(3)
    model = resnet18(weights=None)
    with torch.no_grad():
        model.conv1.weight.fill_(0.125)
    return model.state_dict()


def test_a_missing_hub_file_names_the_file_and_where_it_comes_from(torch_home):
    with pytest.raises(ConfigError) as caught:
        get_task("classification").build_model("resnet18", 3, weights="IMAGENET1K_V1")
    text = str(caught.value)
    assert str(torch_home / "resnet18-f37072fd.pth") in text and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in text
    with pytest.raises(ConfigError, match="has no weights 'IMAGENET9'"):
        get_task("classification").build_model("resnet18", 3, weights="IMAGENET9")
    with pytest.raises(ConfigError, match="'small_cnn' is not a torchvision model"):
        get_task("classification").build_model("small_cnn", 3, weights="IMAGENET1K_V1")


def test_hub_file_is_found_under_torchvisions_name_with_its_hash_checked(torch_home):
    path = torch_home / "scratch.pth"
    torch.save(known_state(), path)
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    named = path.rename(torch_home / f"resnet18-{prefix}.pth")
    entry = Weights(url=f"https://download.pytorch.org/models/resnet18-{prefix}.pth", transforms=None, meta={})
    assert weights_file(entry) == named
    wrong = Weights(url="https://download.pytorch.org/models/resnet18-00000000.pth", transforms=None, meta={})
    named.rename(torch_home / "resnet18-00000000.pth")
    with pytest.raises(ConfigError, match="its name says 00000000: the file is incomplete or another one"):
        weights_file(wrong)


def test_training_starts_from_the_weights_file(tmp_path):
    """Every backbone tensor comes from the file; the head, sized for 3 classes, does not."""
    state = known_state()
    torch.save(state, tmp_path / "backbone.pth")
    from components.training.module import CVModule

    module = CVModule("classification", ["a", "b", "c"], {"arch": "resnet18", "weights_path": str(tmp_path / "backbone.pth")},
                      {"epochs": 1})
    model = module.model
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and (model.conv1.weight == 0.125).all()
    assert torch.equal(model.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    assert model.fc.weight.shape == (3, 512)  # the 1000-class head was not loaded
    scratch = CVModule("classification", ["a", "b", "c"], {"arch": "resnet18"}, {"epochs": 1}).model
    assert not torch.equal(scratch.conv1.weight, state["conv1.weight"])
    with pytest.raises(ConfigError, match="none of its tensors matches"):
        load_pretrained(get_task("classification").build_model("small_cnn", 3), "small_cnn", None, str(tmp_path / "backbone.pth"))
