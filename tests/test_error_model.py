"""The error-model training forward: fitted to the multiplier's real error, differentiable, never used to evaluate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dse.emulation import LayerErrorModel, approximate_layer, fit_error_models, use_error_model
from dse.testing import SHAPES, make_layer

KINDS = [s for s in SHAPES if s.name in ("regular", "depthwise", "grouped", "strided_padded", "linear")]


def test_the_fit_recovers_a_known_gain_offset_and_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    exact = torch.randn(4000, 3, generator=gen) * torch.tensor([1.0, 5.0, 0.1])
    gain, offset, std = torch.tensor([-0.04, 0.0, 0.1]), torch.tensor([0.0, 0.3, -0.01]), torch.tensor([0.02, 0.5, 0.0])
    approx = exact * (1 + gain) + offset + std * torch.randn(exact.shape, generator=gen)
    stats = LayerErrorModel.fit(exact, approx, channel_dim=1)
    torch.testing.assert_close(stats.gain, gain, atol=0.005, rtol=0)
    torch.testing.assert_close(stats.offset, offset, atol=0.03, rtol=0)
    torch.testing.assert_close(stats.std, std, atol=0.02, rtol=0)


def _layer(shape, multiplier: str) -> tuple[nn.Module, torch.Tensor]:
    layer, x = make_layer(shape)
    approx = approximate_layer(layer, multiplier)
    approx.set_activation_range(float(x.min()), float(x.max()))
    return approx, x


@pytest.mark.parametrize("shape", KINDS, ids=lambda s: s.name)
def test_mitchell_is_modeled_as_the_underestimate_it_is(shape) -> None:
    """Mitchell's products are never above the exact ones (about 4% low on average for w6): the fitted
    gain is negative per channel, and the modeled outputs err from the exact sums as the bit-exact ones do."""
    approx, x = _layer(shape, "mitchell_w6_s8")
    use_error_model(approx, "error_model")
    fit_error_models(approx, x)
    stats = approx.error_stats
    assert stats is not None and (stats.gain < -0.005).all() and (stats.gain > -0.12).all()
    x_real, w_real, _ = approx.dequantized(x)
    with torch.no_grad():
        exact = approx._exact_sums(x_real, w_real)
        bit_exact_error = (approx(x) - approx._bias_like(exact) - exact).detach()
    modeled_error = approx(x.clone().requires_grad_(True)).detach() - approx._bias_like(exact) - exact
    dim = approx._channel_dim
    other = [d for d in range(exact.dim()) if d != dim % exact.dim()]
    # per channel, the mean and spread of the error match (the noise is random, the bias is not)
    torch.testing.assert_close(
        modeled_error.mean(dim=other), bit_exact_error.mean(dim=other), atol=0.15 * float(exact.std()), rtol=0.2
    )
    ratio = modeled_error.std() / bit_exact_error.std()
    assert 0.7 < float(ratio) < 1.3


@pytest.mark.parametrize("shape", KINDS, ids=lambda s: s.name)
def test_gradients_reach_every_parameter_scaled_by_the_modeled_gain(shape) -> None:
    approx, x = _layer(shape, "mitchell_w6_s8")
    use_error_model(approx, "error_model")
    fit_error_models(approx, x)
    x1 = x.clone().requires_grad_(True)
    grad_y = torch.randn_like(approx(x))
    approx(x1).backward(grad_y)
    modeled = (x1.grad, approx.weight.grad.clone(), approx.bias.grad.clone())
    approx.zero_grad()
    use_error_model(approx, "bit_exact")
    x2 = x.clone().requires_grad_(True)
    approx(x2).backward(grad_y)  # the straight-through gradient of the bit-exact path
    straight = (x2.grad, approx.weight.grad, approx.bias.grad)
    for name, got, want in zip(("input", "weight", "bias"), modeled, straight, strict=True):
        assert got is not None and torch.isfinite(got).all() and got.abs().sum() > 0, name
        # d/dacc of (1 + gain) acc: the exact gradient times (1 + gain), gain a few percent
        assert float((got - want).norm() / want.norm()) < (0.15 if name != "bias" else 1e-6), name


def test_evaluation_stays_bit_exact_and_an_unfitted_model_is_refused() -> None:
    approx, x = _layer(KINDS[0], "mul8u_DG8")
    with torch.no_grad():
        bit_exact = approx(x)
    assert use_error_model(approx, "error_model") == [""]
    with pytest.raises(RuntimeError, match=r"never fitted; call dse\.emulation\.fit_error_models"):
        approx(x.clone().requires_grad_(True))
    fit_error_models(approx, x)
    with torch.no_grad():
        assert torch.equal(approx(x), bit_exact)  # no autograd: the emulation, whatever trains


def test_auto_models_only_the_layers_whose_bit_exact_forward_is_slow() -> None:
    net = nn.Sequential()
    for path in ("table", "separable", "arithmetic"):
        layer, _ = make_layer(KINDS[0])
        multiplier = "mitchell_w6_s8" if path == "arithmetic" else "mul8s_1KV9"
        net.append(approximate_layer(layer, multiplier, path=path))  # type: ignore[arg-type]
    assert use_error_model(net, "auto") == ["0", "2"]  # table and Mitchell's arithmetic; not separable
    assert use_error_model(net, "bit_exact") == []
    with pytest.raises(ValueError, match="bit_exact, error_model or auto"):
        use_error_model(net, "fast")
