"""Folding each BatchNorm into the convolution before it, as deployed integer accelerators run a network.

After folding, a convolution's weight is ``w * gamma / sqrt(var + eps)`` per output channel and its bias
``(b - mean) * gamma / sqrt(var + eps) + beta``; the BatchNorm becomes an identity. Decimal places,
number formats and multipliers then act on the weights the hardware holds, and the cost model prices
the normalisation where it went: in the convolution's bias, free. Unfolded, a BatchNorm stays float32
after a quantized convolution and costs nothing in dse's model (``model.fold_batchnorm=false``).

Pairs come from the traced graph (``torch.fx``), not from module order: a BatchNorm folds only into a
convolution whose output nothing else reads, each called once.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]

_logger = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold, in place, every BatchNorm that only reads a convolution's output into that convolution
    (``model`` in eval mode: the running statistics are what is folded). Returns the (conv, batchnorm)
    pairs folded. A model torch.fx cannot trace keeps its BatchNorms, with a warning that says why."""
    if model.training:
        raise ValueError("fold_batchnorm folds running statistics: call model.eval() first.")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # data-dependent control flow, unsupported ops: fx raises many types
        _logger.warning(
            "model.fold_batchnorm: torch.fx cannot trace %s (%s: %s); its BatchNorm layers stay float32 and "
            "unpriced. Set model.fold_batchnorm=false to silence this.",
            type(model).__name__,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return []
    modules = dict(model.named_modules())
    calls = Counter(str(node.target) for node in graph.nodes if node.op == "call_module")
    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        bn = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        conv_name, bn_name = str(source.target), str(node.target)
        if isinstance(modules.get(conv_name), _CONVS) and calls[conv_name] == 1 and calls[bn_name] == 1:
            pairs.append((conv_name, bn_name))
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            assert isinstance(conv, _CONVS) and isinstance(bn, nn.modules.batchnorm._BatchNorm)
            _set_submodule(model, conv_name, fuse_conv_bn_eval(conv, bn))
            _set_submodule(model, bn_name, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        _logger.warning(
            "model.fold_batchnorm: %d BatchNorm layer(s) follow no convolution they can fold into (%s); "
            "they stay float32 and unpriced.",
            len(left),
            ", ".join(left[:4]) + (", ..." if len(left) > 4 else ""),
        )
    return pairs
