"""A small CIFAR-10 CNN for the quickstart study and for tests.

It has every layer type the framework targets (regular 3x3, depthwise 3x3,
pointwise 1x1, linear) in a few thousand parameters, so a whole study runs in
minutes on a laptop CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """stem 3x3 -> (depthwise 3x3 + pointwise 1x1) x 3 -> linear."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w, 3),
            _conv_bn(w, w, 3, stride=2, groups=w),
            _conv_bn(w, 2 * w, 1),
            _conv_bn(2 * w, 2 * w, 3, stride=2, groups=2 * w),
            _conv_bn(2 * w, 4 * w, 1),
            _conv_bn(4 * w, 4 * w, 3, stride=2, groups=4 * w),
            _conv_bn(4 * w, 4 * w, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("tiny_cnn")
def tiny_cnn(*, num_classes: int = 10, width: int = 32) -> nn.Module:
    return TinyCNN(num_classes=num_classes, width=width)
