"""Batch-norm re-estimation: the control any reviewer asks of approximate retraining.

Part of what retraining wins back is only the shift an approximation puts into each layer's output mean and
variance. Re-measuring the BatchNorm statistics on training images with the approximation in the forward pass
(no weight changes) recovers that part alone; retraining is worth its cost only by what it adds beyond this.
It needs the model's BatchNorms unfolded (``model.fold_batchnorm=false``): folded, they are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from dse.exceptions import ConfigError

__all__ = ["reestimate_batchnorm"]

_logger = logging.getLogger(__name__)


def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm of ``model`` and measure its statistics again as an equal-weight average over
    ``batches`` (preprocessed inputs) run through ``model`` as it is (its approximations included); the rest of
    the model stays in eval mode (dropout off). Returns the number of images seen; ``model`` ends in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ConfigError(
            "The model has no BatchNorm left to re-estimate: its BatchNorms were folded into the convolutions "
            "(build it with model.fold_batchnorm=false for this control)."
        )
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch counts the same
        norm.train()
    seen = 0
    with torch.no_grad():
        for x in tqdm(batches, desc="batch-norm re-estimation", unit="batch", leave=False):
            model(x)
            seen += len(x)
    model.eval()
    _logger.info("Re-estimated %d BatchNorms on %d images", len(norms), seen)
    return seen
