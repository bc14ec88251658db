"""Batch-norm re-estimation (the retraining control): statistics measured again through the model as it is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dse.batchnorm_folding import fold_batchnorm
from dse.candidates.batchnorm_reestimation import reestimate_batchnorm
from dse.exceptions import ConfigError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 2, 1)).eval()


def test_the_statistics_become_the_mean_and_variance_of_what_the_model_now_computes() -> None:
    model = _model()
    batches = [torch.randn(8, 3, 6, 6) * 3 + 1 for _ in range(3)]
    seen = reestimate_batchnorm(model, batches)
    conv_out = torch.cat([model[0](x) for x in batches])  # (24, 4, 4, 4)
    bn = model[1]
    assert seen == 24 and not model.training and not bn.training
    # an equal-weight average of per-batch statistics (momentum None), as torch keeps it
    means = torch.stack([model[0](x).mean(dim=(0, 2, 3)) for x in batches]).mean(0)
    variances = torch.stack([model[0](x).var(dim=(0, 2, 3), unbiased=True) for x in batches]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert torch.allclose(bn.running_var, variances, rtol=1e-4)
    assert torch.allclose(bn.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)  # equal batches: the same
    assert int(bn.num_batches_tracked) == 3


def test_only_the_batchnorms_change_and_dropout_stays_off() -> None:
    model = _model()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    reestimate_batchnorm(model, [torch.randn(4, 3, 6, 6)])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(model(x), model(x))  # eval mode: dropout off, deterministic


def test_a_folded_model_is_refused_with_what_to_do() -> None:
    model = _model()
    fold_batchnorm(model)
    with pytest.raises(ConfigError, match=r"model\.fold_batchnorm=false"):
        reestimate_batchnorm(model, [torch.randn(2, 3, 6, 6)])
