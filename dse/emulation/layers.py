"""Drop-in Conv1d, Conv2d and Linear layers whose products come from a multiplier.

Activations and weights are quantized to the multiplier's operand width
(signed: symmetric; unsigned: affine with zero points), every product is the
multiplier's, sums are exact, and the result is rescaled:

    acc_o = sum_k lut[xq_k, wq_ok] - zw_o sum_k xq_k - zx sum_k wq_ok + K zx zw_o
    y_o   = s_x s_w,o acc_o + bias_o

What the two layers share (quantization, calibration, the emulation path and its dispatch)
is :class:`~dse.emulation.emulated.EmulatedLayer`; here is only what depends on the layer's
geometry: its compiled-kernel and fused calls, its activation sums, its exact gradient.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import grad as conv_grad

from dse.exceptions import ConfigError
from dse.multipliers import Multiplier

from .emulated import EmulatedLayer, EmulationPath

__all__ = [
    "ApproxConv1d",
    "ApproxConv2d",
    "ApproxLinear",
    "EmulationPath",
    "approximate_layer",
    "training_memory_format",
]


class ApproxConv2d(EmulatedLayer, nn.Conv2d):
    """A Conv2d (any stride, padding, dilation, groups) whose products come from ``multiplier``."""

    def __init__(
        self,
        *args: Any,
        multiplier: Multiplier | str = "exact_s8",
        path: EmulationPath = "auto",
        per_channel: bool = True,
        name: str = "",
        bits: int | None = None,
        signed: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ConfigError(
                f"Layer {name!r}: only numeric zero padding is emulated, got {self.padding!r}/{self.padding_mode!r}."
            )
        self._init_emulation(multiplier, path, per_channel, name, bits, signed)

    @staticmethod
    def _geometry_of(conv: nn.Conv1d | nn.Conv2d, name: str) -> tuple[Any, Any, Any, Any]:
        """Kernel size, stride, padding and dilation of ``conv`` as this layer takes them."""
        return conv.kernel_size, conv.stride, conv.padding, conv.dilation

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv1d | nn.Conv2d,
        multiplier: Multiplier | str,
        path: EmulationPath = "auto",
        per_channel: bool = True,
        name: str = "",
        bits: int | None = None,
        signed: bool | None = None,
    ) -> ApproxConv2d:
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            *cls._geometry_of(conv, name),
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            multiplier=multiplier,
            path=path,
            per_channel=per_channel,
            name=name,
            bits=bits,
            signed=signed,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        layer.load_state_dict(conv.state_dict(), strict=False)
        return layer

    def _exact_grads(
        self, x: torch.Tensor, grad_y: torch.Tensor, needs: tuple[bool, bool, bool]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        stride, padding, dilation = self._geometry()
        x_real, w_real, inside = self.dequantized(x)
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_x = conv_grad.conv2d_input(x.shape, w_real, grad_y, stride, padding, dilation, self.groups)
            grad_x = grad_x * inside
        if needs[1]:
            grad_w = conv_grad.conv2d_weight(x_real, self.weight.shape, grad_y, stride, padding, dilation, self.groups)
        if needs[2]:
            grad_b = grad_y.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b

    def _exact_sums(self, x_real: torch.Tensor, w_real: torch.Tensor) -> torch.Tensor:
        stride, padding, dilation = self._geometry()
        return F.conv2d(x_real, w_real, None, stride, padding, dilation, self.groups)

    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Stride, numeric padding (checked in ``__init__``) and dilation as int pairs."""
        return (
            cast(tuple[int, int], self.stride),
            cast(tuple[int, int], self.padding),
            cast(tuple[int, int], self.dilation),
        )

    def _emulate(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self._activation_qparams()
        w = self._weights()
        stride, padding, dilation = self._geometry()
        ph, pw = padding
        if self._on_kernel(x):
            shape = tuple(self.weight.shape)
            acc, x_sum = self._kernel_sums(x, zero, scale, padding, w, shape, stride, dilation, self.groups)
            return self._finish(acc, x_sum, zero, scale, w, tuple(acc.shape))
        if self._fused is not None:
            if self._fused.shift is not None:  # factors by arithmetic; floor(0) = 0, so zero padding is exact
                idx = self._fused.shifted_values(self._quantize_input(x, zero, scale))
            else:
                idx = self._quantize_input(x, zero, scale, self._fused.offset).to(torch.int32)
            if (ph or pw) and not self._fused.zero_row_is_zero:  # the zero operand's row must be padded in
                idx, padding = F.pad(idx, (pw, pw, ph, ph), value=self._fused.offset), (0, 0)
            acc = self._fused.conv2d(idx, w["w_stack"], stride, padding, dilation, self.groups, self.out_channels)
            return self._finish(acc, None, zero, scale, w, tuple(acc.shape))
        xq = F.pad(self._quantize_input(x, zero, scale), (pw, pw, ph, ph), value=zero)  # real 0 -> zero point
        acc = self._accumulate(xq, w, (stride, dilation, self.groups))
        x_sum = None
        if not self.signed:  # the activations' sums that the zero-point correction needs
            ones = torch.ones(
                self.groups, self.in_channels // self.groups, *self.kernel_size, device=x.device, dtype=torch.float64
            )
            x_sum = F.conv2d(xq.double(), ones, None, stride, 0, dilation, self.groups)
            x_sum = x_sum.repeat_interleave(self.out_channels // self.groups, dim=1)
        return self._finish(acc, x_sum, zero, scale, w, tuple(acc.shape))


class ApproxConv1d(ApproxConv2d):
    """A Conv1d whose products come from ``multiplier``: run as a Conv2d of height 1 (the same products, sums
    and bits); its state_dict holds the Conv1d's 3-d weight, so a Conv1d state_dict loads and saves as is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._register_state_dict_hook(_squeeze_height)

    @staticmethod
    def _geometry_of(conv: nn.Conv1d | nn.Conv2d, name: str) -> tuple[Any, Any, Any, Any]:
        """A Conv1d's geometry as a Conv2d of height 1."""
        if isinstance(conv.padding, str):
            raise ConfigError(f"Layer {name!r}: only numeric zero padding is emulated, got {conv.padding!r}.")
        return (1, conv.kernel_size[0]), (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, super().forward(x.unsqueeze(-2))).squeeze(-2)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if weight is not None and weight.dim() == 3:  # a Conv1d's (out, in/groups, k)
            state_dict = {**state_dict, prefix + "weight": weight.unsqueeze(2)}
        super()._load_from_state_dict(state_dict, prefix, *args)


def _squeeze_height(module: nn.Module, state_dict: dict[str, Any], prefix: str, _: Any) -> None:
    state_dict[prefix + "weight"] = state_dict[prefix + "weight"].squeeze(2)


class ApproxLinear(EmulatedLayer, nn.Linear):  # type: ignore[misc]  # torch types Linear.bias as Parameter, Conv2d.bias as Tensor | None
    """A Linear layer whose products come from ``multiplier``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        multiplier: Multiplier | str = "exact_s8",
        path: EmulationPath = "auto",
        per_channel: bool = True,
        name: str = "",
        bits: int | None = None,
        signed: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_features, out_features, bias, **kwargs)
        self._init_emulation(multiplier, path, per_channel, name, bits, signed)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        multiplier: Multiplier | str,
        path: EmulationPath = "auto",
        per_channel: bool = True,
        name: str = "",
        bits: int | None = None,
        signed: bool | None = None,
    ) -> ApproxLinear:
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            multiplier=multiplier,
            path=path,
            per_channel=per_channel,
            name=name,
            bits=bits,
            signed=signed,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        layer.load_state_dict(linear.state_dict(), strict=False)
        if hasattr(linear, "recurrent_role"):  # a recurrent layer's matrix stays one (dse.assignment.layer_kind)
            layer.recurrent_role = linear.recurrent_role
        return layer

    def _exact_grads(
        self, x: torch.Tensor, grad_y: torch.Tensor, needs: tuple[bool, bool, bool]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x_real, w_real, inside = self.dequantized(x)
        gy = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = (gy @ w_real).view(x.shape) * inside if needs[0] else None
        grad_w = gy.t() @ x_real.reshape(-1, x.shape[-1]) if needs[1] else None
        grad_b = gy.sum(dim=0) if needs[2] else None
        return grad_x, grad_w, grad_b

    _channel_dim = -1

    def _exact_sums(self, x_real: torch.Tensor, w_real: torch.Tensor) -> torch.Tensor:
        return F.linear(x_real, w_real)

    def _emulate(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self._activation_qparams()
        w = self._weights()
        lead = x.shape[:-1]
        if self._on_kernel(x):
            flat = x.reshape(-1, x.shape[-1])
            n, k = flat.shape
            x4 = flat.view(n, k, 1, 1)
            acc, x_sum = self._kernel_sums(x4, zero, scale, (0, 0), w, (-1, k, 1, 1), (1, 1), (1, 1), 1)
            acc, x_sum = acc.view(n, -1), (x_sum.view(n, 1) if x_sum is not None else None)
            return self._finish(acc, x_sum, zero, scale, w, tuple(acc.shape)).reshape(*lead, -1)
        xq = self._quantize_input(x.reshape(-1, x.shape[-1]), zero, scale)
        if self._fused is not None:
            operands = (
                self._fused.shifted_values(xq)
                if self._fused.shift is not None
                else xq.add_(self._fused.offset).to(torch.int32)
            )
            acc = self._fused.linear(operands, w["w_stack"])
            return self._finish(acc, None, zero, scale, w, tuple(acc.shape)).reshape(*lead, -1)
        acc = self._accumulate(xq, w, None)
        x_sum = xq.double().sum(dim=1, keepdim=True) if not self.signed else None
        return self._finish(acc, x_sum, zero, scale, w, tuple(acc.shape)).reshape(*lead, -1)


def approximate_layer(
    module: nn.Module,
    multiplier: Multiplier | str,
    path: EmulationPath = "auto",
    per_channel: bool = True,
    name: str = "",
    bits: int | None = None,
    signed: bool | None = None,
) -> ApproxConv1d | ApproxConv2d | ApproxLinear:
    """The emulated twin of a Conv1d, Conv2d or Linear (same weights, same state_dict keys + act_range).

    ``bits``/``signed``, when given, must match the multiplier's operands (else a ConfigError).
    """
    if isinstance(module, nn.Conv1d):
        return ApproxConv1d.from_conv(module, multiplier, path, per_channel, name, bits, signed)
    if isinstance(module, nn.Conv2d):
        return ApproxConv2d.from_conv(module, multiplier, path, per_channel, name, bits, signed)
    if isinstance(module, nn.Linear):
        return ApproxLinear.from_linear(module, multiplier, path, per_channel, name, bits, signed)
    raise ConfigError(f"Layer {name!r} is a {type(module).__name__}; only Conv1d, Conv2d and Linear take a multiplier.")


def training_memory_format(net: nn.Module) -> torch.memory_format:
    """The layout a network with emulated layers trains fastest in on this device's paths.

    The compiled kernel reads its operands in NCHW, so a network with bit-exact kernel layers
    trains faster in ``contiguous_format`` (channels_last would convert around every such
    layer; measured on MobileNetV2, mul8s_1KV9: 3.4x vs 4.5x the exact step); everything
    else (PyTorch convolutions, the error model) prefers ``channels_last``.
    """
    for m in net.modules():
        if isinstance(m, EmulatedLayer) and m.path == "kernel" and m.training_forward == "bit_exact":
            return torch.contiguous_format
    return torch.channels_last
