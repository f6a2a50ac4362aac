"""Small networks for tiny images, trained from scratch on a CPU in minutes.

The torchvision zoo (resnet, mobilenet, deeplab, ...) is for real image sizes and GPUs;
these are the defaults for the built-in 32-128 px datasets.
"""

from __future__ import annotations

import torch
from torch import nn


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
