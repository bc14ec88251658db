"""Emulated layers train: bit-exact forward, straight-through gradients of the exact op at the quantized operands."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.emulation import approximate_layer
from dse.testing import SHAPES, make_layer

KINDS = [s for s in SHAPES if s.name in ("regular", "depthwise", "grouped", "strided_padded", "linear")]


@pytest.mark.parametrize("shape", KINDS, ids=lambda s: s.name)
@pytest.mark.parametrize("multiplier", ["mul8s_1KV9", "mul8u_DG8", "mitchell_w6_s8"])
def test_training_forward_equals_evaluation_forward_bit_for_bit(shape, multiplier: str) -> None:
    layer, x = make_layer(shape)
    approx = approximate_layer(layer, multiplier)
    approx.set_activation_range(float(x.min()), float(x.max()))
    with torch.no_grad():
        evaluated = approx(x)
    trained = approx(x.clone().requires_grad_(True))  # autograd on: the straight-through function
    assert trained.requires_grad and torch.equal(trained.detach(), evaluated)


@pytest.mark.parametrize("shape", KINDS, ids=lambda s: s.name)
@pytest.mark.parametrize("multiplier", ["mul8s_1KV9", "mul8u_DG8"])
def test_gradients_are_those_of_the_exact_layer_at_the_quantized_operands(shape, multiplier: str) -> None:
    layer, x = make_layer(shape)
    approx = approximate_layer(layer, multiplier)
    lo, hi = float(x.min()) * 0.8, float(x.max()) * 0.8  # some activations fall outside: clipped
    approx.set_activation_range(lo, hi)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(0)
    grad_y = torch.randn_like(approx(x))
    approx(x).backward(grad_y)
    # the same gradients by autograd through the exact op at the dequantized operands
    x_real, w_real, inside = approx.dequantized(x.detach())
    xr, wr = x_real.clone().requires_grad_(True), w_real.clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    if shape.linear:
        y = F.linear(xr, wr, b)
    else:
        y = F.conv2d(xr, wr, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    y.backward(grad_y)
    for name, got, want in [
        ("input", x.grad, xr.grad * inside),
        ("weight", approx.weight.grad, wr.grad),
        ("bias", approx.bias.grad, b.grad),
    ]:
        assert got is not None and torch.isfinite(got).all() and got.abs().sum() > 0, name
        # float32 sums in another order (threads): a bias gradient sums every output position
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 if name == "bias" else 1e-6, msg=name)
    assert not inside.all() and (x.grad[~inside] == 0).all()  # outside the frozen range: no gradient


def test_a_few_steps_of_retraining_recover_accuracy_lost_to_a_coarse_multiplier() -> None:
    """A tiny real problem: a linear classifier on a coarse truncated multiplier; SGD through the
    straight-through gradients lowers the loss and raises the accuracy of the *emulated* model."""
    torch.manual_seed(0)  # the layer's initialisation
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=gen) * 2
    labels = torch.arange(400) % 4
    x = centers[labels] + torch.randn(400, 16, generator=gen)
    exact = nn.Linear(16, 4)
    opt = torch.optim.SGD(exact.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(exact(x), labels).backward()
        opt.step()
    with torch.no_grad():  # a perturbed start: the approximate model must learn it back
        exact.weight.add_(torch.randn(exact.weight.shape, generator=gen) * 2 * exact.weight.abs().max())
    approx = approximate_layer(exact, "truncated_t8_s8")
    approx.set_activation_range(float(x.min()), float(x.max()))

    def accuracy() -> float:
        with torch.no_grad():
            return float((approx(x).argmax(1) == labels).float().mean())

    before_acc = accuracy()
    with torch.no_grad():
        before_loss = float(F.cross_entropy(approx(x), labels))
    opt = torch.optim.SGD(approx.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(approx(x), labels).backward()
        opt.step()
    with torch.no_grad():
        after_loss = float(F.cross_entropy(approx(x), labels))
    assert before_acc < 0.75  # the perturbation broke it clearly
    assert after_loss < 0.5 * before_loss
    assert accuracy() >= before_acc + 0.15 and accuracy() > 0.9


def test_emulated_layers_run_outside_autocast() -> None:
    """Under bf16 autocast the emulation still sums exactly in float32: the output is exactly that of
    the same (bf16-rounded) input without autocast."""
    layer, x = make_layer(SHAPES[0])
    approx = approximate_layer(layer, "mul8s_1KV9")
    approx.set_activation_range(float(x.min()), float(x.max()))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = approx(x.bfloat16())
        plain = approx(x.bfloat16().float())
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, plain)


def test_trainable_assignments_keep_weights_on_their_grid_and_forward_the_same() -> None:
    """Decimal places and formats become parametrizations: the same forward as the frozen copy,
    and after an optimizer step the effective weights are still on the d-decimal / format grid."""
    from dse.assignment import LayerConfig
    from dse.candidates.transform import apply_assignment
    from dse.emulation import calibrate_ranges
    from dse.training.cifar10 import CIFAR10DataModule, normalize
    from dse.training.models import get_model
    from dse.training.weights import load_weights

    torch.manual_seed(0)
    # the trained model on real images: its training-mode activations stay near the calibrated ranges
    model = load_weights(get_model("tiny_cnn"), "tiny_cnn_cifar10").eval()
    data = CIFAR10DataModule(path="cifar10_test_subset", test_subset=20)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))
    x, y = normalize(images)[:8], labels[:8]
    assignment = {
        "features.0.0": LayerConfig(decimals=2),
        "features.2.0": LayerConfig(weight_format="e4m3", activation_format="int8"),
        "classifier": LayerConfig(multiplier="mul8s_1KV9", decimals=3),
    }
    ranges = calibrate_ranges(model, [x], list(assignment))
    frozen = apply_assignment(model, assignment, ranges)
    trainable = apply_assignment(model, assignment, ranges, trainable=True)
    with torch.no_grad():
        assert torch.equal(frozen(x), trainable(x))
    trainable.train()
    opt = torch.optim.SGD(trainable.parameters(), lr=0.05)
    F.cross_entropy(trainable(x), y).backward()
    latent = trainable.features[0][0].parametrizations.weight.original
    assert latent.grad is not None and latent.grad.abs().sum() > 0  # straight through the rounding
    before = trainable.features[0][0].weight.detach().clone()
    opt.step()
    after = trainable.features[0][0].weight.detach()
    assert not torch.equal(before, after)
    assert torch.equal(after, torch.round(after * 100) / 100)  # still 2 decimal places
    assert torch.allclose(after, latent.detach(), atol=0.005)  # the rounded copy of the latent weight
