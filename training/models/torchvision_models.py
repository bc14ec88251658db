"""Any torchvision classification architecture by name (``model=torchvision model.arch=resnet18``).

Built with random weights and ``num_classes`` outputs; the trained weights come from ``model.weights``
(a ``state_dict`` saved from the same builder). torchvision's ImageNet weights are not offered here:
their 1000-class head does not fit a CIFAR-10 search.
"""

from __future__ import annotations

import difflib
from typing import Any

import torchvision
from torch import nn

from dse.exceptions import ConfigError

__all__ = ["torchvision_model"]


def torchvision_model(arch: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)``."""
    known = torchvision.models.list_models(module=torchvision.models)  # classification architectures
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        raise ConfigError(
            f"model.arch={arch!r} is not a torchvision classification model"
            + (f"; did you mean {', '.join(close)}?" if close else ".")
            + " The names: torchvision.models.list_models(module=torchvision.models)."
        )
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
