"""MobileNetV2 adapted to 32x32 inputs (CIFAR-10).

torchvision's MobileNetV2 with the stem convolution at stride 1 instead of 2:
at 32x32 the ImageNet stem would leave a 1x1 map before the last stage. The
rest (inverted residual table, widths, dropout 0.2) is torchvision's, so layer
names (``features.3.conv.1.0`` ...) are the ones users know.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import MobileNetV2

from . import register_model


@register_model("mobilenet_v2_cifar")
def mobilenet_v2_cifar(*, num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 for 32x32 images: about 2.24 M parameters at ``width_mult=1``."""
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    stem = model.features[0][0]
    assert isinstance(stem, nn.Conv2d)  # torchvision's layout; not user input
    stem.stride = (1, 1)
    return model
