"""What every emulated layer shares: quantization of its operands, its calibrated activation range, the
choice of emulation path (made once, at construction) and its dispatch, and the rescaling of the sums.

The formula is in :mod:`dse.emulation.layers`; how a path is chosen, in :mod:`dse.emulation.path_choice`.
With the exact multiplier this is ordinary integer quantized inference. The
activation range is calibrated once (:func:`dse.emulation.calibration.calibrate_ranges`)
and frozen in the ``act_range`` buffer. All paths give the same bits. The state_dict is the
original layer's plus ``act_range``, and an original state_dict loads as is.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch
from torch import nn

from dse.exceptions import ConfigError
from dse.multipliers import Multiplier
from dse.numerics.quantization import activation_qparams, qrange, quantize, weight_qparams

from ._exact_sums import INT32_EXACT, accumulator_dtype
from ._kernel import kernel_conv2d
from .error_stats import LayerErrorModel, NoisePool, fake_quantize
from .path_choice import EmulationPath, plan_emulation
from .reference import lut_conv2d_reference, lut_linear_reference

__all__ = ["EmulatedLayer", "EmulationPath"]

_logger = logging.getLogger(__name__)


class EmulatedLayer(nn.Module):
    """What ApproxConv2d and ApproxLinear share: quantization, calibration state, path choice.

    A mixin placed before ``nn.Conv2d`` / ``nn.Linear``, which provide ``weight`` and ``bias``.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    act_range: torch.Tensor

    def _init_emulation(
        self,
        multiplier: Multiplier | str,
        path: EmulationPath,
        per_channel: bool,
        name: str,
        bits: int | None,
        signed: bool | None,
    ) -> None:
        plan = plan_emulation(multiplier, path, name, bits, signed, int(self.weight[0].numel()))
        self.multiplier = plan.multiplier
        self.layer_name = name
        self.per_channel = per_channel
        self.bits = plan.multiplier.bits
        self.signed = plan.multiplier.signed
        self._torch_path = plan.torch_path
        self._lut = plan.lut
        self._arithmetic, self._separable, self._fused, self._tables = (
            plan.arithmetic,
            plan.separable,
            plan.fused,
            plan.tables,
        )
        self._kernel, self._kernel_tables = plan.kernel, plan.kernel_tables
        self.path = plan.path
        # Training forward: the bit-exact emulation, or the fitted error model (dse.emulation.error_model)
        self.training_forward: Literal["bit_exact", "error_model"] = "bit_exact"
        self.error_stats: LayerErrorModel | None = None
        self.noise = NoisePool()  # use_error_model shares one among a network's layers
        self._fitting = False  # fit_error_models: the next forward fits error_stats on its input
        self._cache: dict[str, Any] = {}  # derived from the weights / the activation range; rebuilt on change
        self._constants: dict[str, Any] = {}  # fixed for the layer's life (table, shape)
        self.register_buffer("act_range", torch.tensor([math.nan, math.nan]))

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``.to(device)`` moves the lookup tables too, keeping their dtypes (they must stay exact)."""
        result = super()._apply(fn, recurse)
        device = self.weight.device
        self._lut = self._lut.to(device)
        if self._separable is not None:
            self._separable.to(device)
        if self._fused is not None:
            self._fused.to(device)
        if self._tables is not None:
            self._tables.lut = self._tables.lut.to(device)
        return result

    # -- calibration ------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.act_range).all())

    def set_activation_range(self, lo: float, hi: float) -> None:
        """Freeze the input range the activations are quantized over."""
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ConfigError(f"Layer {self.layer_name!r}: invalid activation range [{lo}, {hi}].")
        self.act_range.copy_(torch.tensor([lo, hi]))

    def _activation_qparams(self) -> tuple[float, float]:
        """Scale and zero point of the activations, recomputed only when ``act_range`` changes."""
        key = (self.act_range._version, self.act_range.data_ptr())
        cached = self._cache.get("qparams")
        if cached is not None and cached[0] == key:
            return cached[1]
        if not self.calibrated:
            raise RuntimeError(
                f"Layer {self.layer_name!r} has no calibrated activation range; call "
                "dse.emulation.calibrate_ranges on the exact model and set_activation_range "
                "(dse.candidates.transform.apply_assignment does both)."
            )
        p = activation_qparams(float(self.act_range[0]), float(self.act_range[1]), self.bits, self.signed)
        result = float(p.scale), float(p.zero_point)
        self._cache["qparams"] = (key, result)
        return result

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        key = prefix + "act_range"
        if key not in state_dict:  # an original Conv2d/Linear state_dict: keep the current range
            state_dict = {**state_dict, key: self.act_range.clone()}
        super()._load_from_state_dict(state_dict, prefix, *args)

    # -- operands -----------------------------------------------------------------------
    def _quantize_input(self, x: torch.Tensor, zero: float, scale: float, offset: float = 0.0) -> torch.Tensor:
        """Integer-valued activations (+ ``offset``); NaN goes to the zero point, +-inf saturate."""
        return quantize(x, torch.tensor(scale, dtype=x.dtype, device=x.device), zero, self.bits, self.signed, offset)

    def _on_kernel(self, x: torch.Tensor) -> bool:
        """The compiled kernel runs CPU tensors; other devices take the PyTorch path."""
        return self._kernel is not None and x.device.type == "cpu"

    def _kernel_sums(
        self,
        x: torch.Tensor,
        zero: float,
        scale: float,
        padding: tuple[int, int],
        w: dict[str, Any],
        w_shape: tuple[int, ...],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sums of the table's products from the compiled kernel, which quantizes and pads the float
        input itself (one pass; the same arithmetic as :func:`dse.numerics.quantization.quantize`).

        Signed operands: (int32 sums, None). Unsigned: the kernel applies the zero-point correction
        in exact integers when the corrected sums fit int32, returning (corrected sums, None);
        otherwise (sums, activation sums per output channel) for :meth:`_finish` to correct.
        """
        assert self._kernel is not None and self._kernel_tables is not None
        lo, hi = qrange(self.bits, self.signed)
        idx = self._kernel.quantize_pad(x.float(), scale, zero, lo, hi, padding[0], padding[1], self.bits)
        w_idx = w["w_idx8"].view(w_shape)
        if self.signed:
            return kernel_conv2d(self._kernel, idx, w_idx, self._kernel_tables, stride, dilation, groups)[0], None
        if self._kernel_corrects():
            zero_points = (w["w_zero64"], w["w_sum64"], int(zero))
            out = kernel_conv2d(
                self._kernel, idx, w_idx, self._kernel_tables, stride, dilation, groups, zero_points=zero_points
            )
            return out[0], None
        out = kernel_conv2d(self._kernel, idx, w_idx, self._kernel_tables, stride, dilation, groups, with_xsum=True)
        per_group = out[0].shape[1] // groups
        # one sum per group: shared by its output channels (groups == 1 broadcasts over all of them)
        return out[0], (out[1].repeat_interleave(per_group, dim=1) if groups > 1 and per_group > 1 else out[1])

    def _kernel_corrects(self) -> bool:
        """Whether the zero-point-corrected sums of this (unsigned) layer fit the kernel's int32."""
        if "kernel_corrects" not in self._constants:
            lo, hi = qrange(self.bits, self.signed)
            bound = float(self._lut.abs().max()) + 3.0 * max(abs(lo), abs(hi)) ** 2
            self._constants["kernel_corrects"] = self._terms_per_output() * bound < INT32_EXACT
        return bool(self._constants["kernel_corrects"])

    def _index(self, q: torch.Tensor) -> torch.Tensor:
        """Table index of integer-valued operands: the bit pattern (two's complement if signed)."""
        q = q.long()
        return torch.remainder(q, 2**self.bits) if self.signed else q

    def _weights(self) -> dict[str, Any]:
        """Quantized weights and everything derived from them, rebuilt only when they change."""
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device)
        if self._cache.get("key") == key:
            return self._cache
        p = weight_qparams(self.weight, self.bits, self.signed, self.per_channel)
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        scale = p.scale.to(self.weight.device).view(shape)
        zero = p.zero_point.to(self.weight.device).view(shape)
        wq = quantize(self.weight.detach().float(), scale, zero, self.bits, self.signed)
        w_idx = self._index(wq)
        cache: dict[str, Any] = {
            "key": key,
            "wq": wq,
            "w_idx": w_idx,
            "w_scale": p.scale.to(self.weight.device),
            "w_zero": p.zero_point.to(self.weight.device),
        }
        cache["w_sum"] = wq.reshape(wq.shape[0], -1).sum(dim=1)
        if self._kernel is not None:
            cache["w_idx8"] = w_idx.to(torch.uint8).contiguous()
            if not self.signed:
                cache["w_zero64"] = cache["w_zero"].round().long().contiguous()
                cache["w_sum64"] = cache["w_sum"].round().long().contiguous()
        if self._fused is not None:
            cache["w_stack"] = self._fused.weight_stack(wq)
        elif self._separable is not None:
            cache["w_factors"] = self._separable.weight_factors(w_idx) if self._separable.rank else None
        self._cache = cache
        return cache

    def _terms_per_output(self) -> int:
        return int(self.weight[0].numel())

    def _accumulator_dtype(self) -> torch.dtype:
        """float32 when every sum of this layer is exact in it, else float64 (fixed per layer)."""
        if "acc_dtype" not in self._constants:
            lo, hi = qrange(self.bits, self.signed)
            bound = float(self._lut.abs().max())
            if not self.signed:  # zero-point terms
                bound += 3.0 * max(abs(lo), abs(hi)) ** 2
            self._constants["acc_dtype"] = accumulator_dtype(self._terms_per_output(), bound)
        return self._constants["acc_dtype"]

    def _finish(
        self,
        acc: torch.Tensor,
        x_sum: torch.Tensor | None,
        zero: float,
        scale: float,
        w: dict[str, Any],
        out_shape: tuple[int, ...],
    ) -> torch.Tensor:
        """Zero-point corrections and rescaling; shared by every path so they agree bit for bit."""
        dtype = self._accumulator_dtype()
        acc = acc.to(dtype)
        view = (1, -1) + (1,) * (len(out_shape) - 2)
        if not self.signed and x_sum is not None:  # (None: the kernel applied the correction already)
            zw = w["w_zero"].to(dtype).view(view)
            acc = (
                acc
                - zw * x_sum.to(dtype)
                - zero * w["w_sum"].to(dtype).view(view)
                + self._terms_per_output() * zero * zw
            )
        combined = w.get("combined")
        if combined is None or w.get("combined_for") != (scale, dtype, view):  # per weights and activation scale
            combined = (scale * w["w_scale"].double()).to(dtype).view(view)
            w["combined"], w["combined_for"] = combined, (scale, dtype, view)
        if dtype == torch.float32 and self.bias is not None:
            return torch.addcmul(self.bias.view(view), acc, combined)  # one pass
        y = (acc * combined).float()
        if self.bias is not None:
            y = y + self.bias.view(view)
        return y

    def extra_repr(self) -> str:
        forward = ", training_forward=error_model" if self.training_forward == "error_model" else ""
        return f"{super().extra_repr()}, multiplier={self.multiplier.name}, path={self.path}{forward}"

    # -- forward and its gradient -------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The emulated layer, bit-exact. Under autograd (training), the same output with a
        straight-through gradient: that of the exact operation at the quantized operands.

        What trains and what stays: weight scales (and zero points) follow the weights at
        every step (they are derived from the current weights); the activation range stays
        frozen at its calibrated value (``act_range``), so the forward never depends on the
        batch; gradients to activations outside that range are zero (clipped
        straight-through). Emulation runs outside autocast: its sums must stay exact.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self._fitting:
                return self._fit_error_model(x)
            if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
                if self.training_forward == "error_model":
                    return self._error_model_forward(x)
                return _EmulatedStraightThrough.apply(x, self.weight, self.bias, self)
            return self._emulate(x)

    def _emulate(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _accumulate(
        self, xq: torch.Tensor, w: dict[str, Any], conv: tuple[tuple[int, int], tuple[int, int], int] | None
    ) -> torch.Tensor:
        """Sums of the multiplier's products on the PyTorch path chosen at construction (any device): the one
        place the paths are dispatched. ``xq``: integer-valued activations (a conv's already padded);
        ``conv``: (stride, dilation, groups) of a convolution, None for a linear layer."""
        path = self._torch_path
        if path == "arithmetic":
            assert self._arithmetic is not None
            return self._arithmetic.conv2d(xq, w["wq"], *conv) if conv else self._arithmetic.linear(xq, w["wq"])
        idx = self._index(xq)
        if path == "reference":
            lut = self._lut.to(xq.device)
            if conv:
                return lut_conv2d_reference(idx, w["w_idx"], lut, *conv)
            return lut_linear_reference(idx, w["w_idx"], lut)
        if path == "table":
            assert self._tables is not None
            return self._tables.conv2d(idx, w["w_idx"], *conv) if conv else self._tables.linear(idx, w["w_idx"])
        assert self._separable is not None
        factors = w.get("w_factors")
        if conv:
            return self._separable.conv2d(xq, idx, w["wq"], factors, *conv)
        return self._separable.linear(xq, idx, w["wq"], factors)

    _channel_dim = 1  # of the output: conv (N, C, H, W); ApproxLinear overrides

    def _exact_sums(self, x_real: torch.Tensor, w_real: torch.Tensor) -> torch.Tensor:
        """The exact layer without bias, on real-valued operands (autograd-friendly)."""
        raise NotImplementedError

    def _fit_error_model(self, x: torch.Tensor) -> torch.Tensor:
        """The bit-exact output; on the way, fit ``error_stats`` to its sums' error on this input."""
        with torch.no_grad():
            y = self._emulate(x)
            x_real, w_real, _ = self.dequantized(x)
            exact = self._exact_sums(x_real, w_real)
            approx = y - self._bias_like(y) if self.bias is not None else y
            self.error_stats = LayerErrorModel.fit(exact, approx, self._channel_dim)
        return y

    def _error_model_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training forward of the error model: exact sums at the quantized operands (straight-through
        gradients, clipped outside the activation range, as the bit-exact path) plus the fitted error."""
        if self.error_stats is None:
            raise RuntimeError(
                f"Layer {self.layer_name!r} trains through the error model but it was never fitted; "
                "call dse.emulation.fit_error_models(net, batch) first."
            )
        scale, zero = self._activation_qparams()
        lo, hi = qrange(self.bits, self.signed)
        x_ste = fake_quantize(x, scale, zero, lo, hi)
        with torch.no_grad():  # weights are small: the exact quantization, straight through
            p = weight_qparams(self.weight, self.bits, self.signed, self.per_channel)
            view = (-1,) + (1,) * (self.weight.dim() - 1)
            w_scale, w_zero = p.scale.to(self.weight.device).view(view), p.zero_point.to(self.weight.device).view(view)
            w_real = (
                quantize(self.weight.detach().float(), w_scale, w_zero, self.bits, self.signed) - w_zero
            ) * w_scale
        w_ste = w_real + (self.weight - self.weight.detach())
        return self.error_stats.apply(self._exact_sums(x_ste, w_ste), self._channel_dim, self.noise, self.bias)

    def _bias_like(self, y: torch.Tensor) -> torch.Tensor:
        assert self.bias is not None
        return self.bias.view([-1 if d == self._channel_dim % y.dim() else 1 for d in range(y.dim())])

    def _exact_grads(
        self, x: torch.Tensor, grad_y: torch.Tensor, needs: tuple[bool, bool, bool]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Gradients (input, weight, bias) of the exact layer at the dequantized operands."""
        raise NotImplementedError

    def dequantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The operands the emulation multiplies, in real units: s_x (q_x - z_x), s_w (q_w - z_w),
        and the mask of activations inside the frozen range (where the straight-through gradient passes)."""
        scale, zero = self._activation_qparams()
        xq = self._quantize_input(x.detach(), zero, scale)
        w = self._weights()
        view = (-1,) + (1,) * (self.weight.dim() - 1)
        w_real = (w["wq"] - w["w_zero"].view(view)) * w["w_scale"].view(view)
        lo, hi = (float(v) for v in self.act_range)
        inside = (x >= min(lo, 0.0) - 0.5 * scale) & (x <= max(hi, 0.0) + 0.5 * scale)
        return (xq - zero) * scale, w_real, inside


class _EmulatedStraightThrough(torch.autograd.Function):
    """Forward: the emulated (bit-exact) layer. Backward: the exact layer's gradient at the
    quantized operands (straight through the rounding; zero outside the activation range)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: EmulatedLayer
    ) -> torch.Tensor:
        ctx.layer = layer
        ctx.save_for_backward(x)
        with torch.no_grad():
            return layer._emulate(x)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        grad_x, grad_w, grad_b = ctx.layer._exact_grads(x, grad_y, needs)
        return grad_x, grad_w, grad_b, None
