"""Small networks for tiny images, trained from scratch on a CPU in minutes.

The torchvision zoo (resnet, mobilenet, deeplab, ...) is for real image sizes and GPUs;
these are the defaults for the built-in 32-128 px datasets. `load_pretrained` starts any
model of the zoo from local pretrained weights (model.weights / model.weights_path).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from components.errors import ConfigError


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """VGG-style classifier: [N, 3, H, W] -> logits [N, num_classes], any H, W >= 8."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(3, width),
            nn.MaxPool2d(2),
            conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def down_block(c_in: int, c_out: int) -> nn.Sequential:
    """Halve H and W (strided 3x3 conv), then one conv_block."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        conv_block(c_out, c_out),
    )


class SmallDetectionBody(nn.Sequential):
    """Backbone body for detectors on 64-128 px images: [N, 3, H, W] -> layer2/3/4 at strides
    8, 16, 32 with 32/64/96 channels (named children, for torchvision's BackboneWithFPN)."""

    channels = (32, 64, 96)

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.add_module("stem", down_block(3, width))  # stride 2
        self.add_module("layer1", down_block(width, width))  # stride 4
        self.add_module("layer2", down_block(width, self.channels[0]))  # stride 8
        self.add_module("layer3", down_block(self.channels[0], self.channels[1]))  # stride 16
        self.add_module("layer4", down_block(self.channels[1], self.channels[2]))  # stride 32


class SmallUNet(nn.Module):
    """U-Net for tiny images: [N, 3, H, W] -> logits [N, num_classes, H, W], H and W
    divisible by 8. `encoder` is the part transfer learning treats as the backbone."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.encoder = nn.ModuleList([conv_block(3, w), conv_block(w, 2 * w), conv_block(2 * w, 4 * w), conv_block(4 * w, 8 * w)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in (8 * w, 4 * w, 2 * w)])
        self.decoder = nn.ModuleList([conv_block(c, c // 2) for c in (8 * w, 4 * w, 2 * w)])
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


# ---- pretrained weights, from local files only (nothing is downloaded at run time) -------
HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's check_hash convention: <name>-<sha256 prefix>.pth


def hub_checkpoints() -> Path:
    """$TORCH_HOME/hub/checkpoints (torch.hub's cache, where torchvision looks)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(weights: Any) -> Path:
    """The local file of a torchvision `Weights` entry, under the name torchvision expects and
    with the sha256 prefix in that name checked; ConfigError naming the file otherwise."""
    name = Path(urlparse(weights.url).path).name
    path = hub_checkpoints() / name
    if not path.is_file():
        raise ConfigError(f"model.weights: {path} not found (nothing is downloaded at run time); fetch {weights.url} "
                          f"on a machine with internet and copy it there (or set TORCH_HOME), or give model.weights_path")
    prefix = HASH_PREFIX.search(name)
    if prefix:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(prefix.group(1)):
            raise ConfigError(f"model.weights: {path} has sha256 {digest[:12]}..., its name says {prefix.group(1)}: "
                              f"the file is incomplete or another one; fetch {weights.url} again")
    return path


def torchvision_weights(arch: str, name: str) -> Any:
    """torchvision's weight enum entry `name` (e.g. IMAGENET1K_V1, DEFAULT) of model `arch`."""
    from torchvision.models import get_model_weights, list_models

    if arch not in list_models():
        raise ConfigError(f"model.weights: '{arch}' is not a torchvision model, so it has no named weights; "
                          "give model.weights_path (a state dict file) instead")
    enum = get_model_weights(arch)
    try:
        return enum[name]
    except KeyError:
        raise ConfigError(f"model.weights: {arch} has no weights '{name}'; choose one of "
                          f"{[w.name for w in enum]} (or DEFAULT)") from None


def load_pretrained(model: nn.Module, arch: str, weights: str | None, weights_path: str | None) -> list[str]:
    """Load `weights` (torchvision's name, from the hub cache) or `weights_path` (a state
    dict or a cvops checkpoint) into `model`: every tensor whose name and shape match; the
    head, sized for this dataset's classes, keeps its fresh initialisation. Returns the loaded
    names; a file that matches nothing is an error."""
    if weights is None and weights_path is None:
        return []
    path = Path(weights_path) if weights_path else weights_file(torchvision_weights(arch, weights))
    if not path.is_file():
        raise ConfigError(f"model.weights_path: {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling failure means the same to the user)
        raise ConfigError(f"model.weights_path: {path} is not a torch state dict ({type(exc).__name__}: {exc})"[:400]) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not matched:
        raise ConfigError(f"{path}: none of its tensors matches a parameter of '{arch}' by name and shape; "
                          "give weights saved from the same architecture")
    model.load_state_dict(matched, strict=False)
    return sorted(matched)
