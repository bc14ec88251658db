"""Drop-in Conv2d and Linear layers whose products come from a multiplier.

Activations and weights are quantized to the multiplier's operand width
(signed: symmetric; unsigned: affine with zero points), every product is the
multiplier's, sums are exact, and the result is rescaled:

    acc_o = sum_k lut[xq_k, wq_ok] - zw_o sum_k xq_k - zx sum_k wq_ok + K zx zw_o
    y_o   = s_x s_w,o acc_o + bias_o

With the exact multiplier this is ordinary integer quantized inference. The
activation range is calibrated once (:func:`dse.emulation.calibration.calibrate_ranges`)
and frozen in the ``act_range`` buffer. ``path`` picks the emulation:
``reference`` (unfold + lookups, the oracle), ``separable`` (1 + rank convs),
``table`` (weight-specific tables, any multiplier), ``arithmetic`` (Mitchell's
product computed per MAC, no table: any device, any width), ``kernel`` (the compiled
one-read-per-MAC kernel, CPU; other devices take the PyTorch path), or ``auto``
(the kernel on CPU unless the table needs no lookup; separable or table elsewhere).
All paths give the same bits. The state_dict is the original layer's plus ``act_range``, and an
original state_dict loads as is.
"""

from __future__ import annotations

import logging
import math
from types import ModuleType
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import grad as conv_grad

from dse.exceptions import ConfigError
from dse.multipliers import MitchellMultiplier, Multiplier, get_multiplier, operand_values
from dse.numerics.quantization import activation_qparams, qrange, quantize, weight_qparams

from ._exact_sums import INT32_EXACT, accumulator_dtype
from ._fused import FusedSeparable
from ._kernel import KernelTables, kernel_conv2d, load_kernel
from ._mitchell_arith import MitchellProducts
from ._separable import SeparableProducts
from ._tables import TableProducts
from .error_model import ErrorStats, NoisePool, fake_quantize
from .reference import lut_conv2d_reference, lut_linear_reference

__all__ = ["ApproxConv2d", "ApproxLinear", "EmulationPath", "approximate_layer", "training_memory_format"]

_logger = logging.getLogger(__name__)
EmulationPath = Literal["auto", "reference", "separable", "table", "kernel", "arithmetic"]
_PATHS = ("auto", "reference", "separable", "table", "kernel", "arithmetic")


class _Emulated(nn.Module):
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
        mult = get_multiplier(multiplier) if isinstance(multiplier, str) else multiplier
        if path not in _PATHS:
            raise ConfigError(f"Layer {name!r}: unknown emulation path {path!r}; choose one of {list(_PATHS)}.")
        if bits is not None and bits != mult.bits:
            raise ConfigError(
                f"Layer {name!r} is quantized to {bits} bits, but multiplier {mult.name!r} "
                f"takes {mult.bits}-bit operands. "
                f"Quantize the layer to {mult.bits} bits or choose a {bits}-bit multiplier."
            )
        if signed is not None and signed != mult.signed:
            want, have = ("signed" if signed else "unsigned"), ("signed" if mult.signed else "unsigned")
            raise ConfigError(
                f"Layer {name!r} feeds {want} operands to multiplier {mult.name!r}, whose table is {have}. "
                f"Use a {want} table (e.g. {'mul8s_*' if signed else 'mul8u_*'}) or {have} quantization."
            )
        self.multiplier = mult
        self.layer_name = name
        self.per_channel = per_channel
        self.bits = mult.bits
        self.signed = mult.signed
        values = operand_values(mult.bits, mult.signed)
        table = mult.table()
        if path == "arithmetic" and not isinstance(mult, MitchellMultiplier):
            raise ConfigError(
                f"Layer {name!r}: path 'arithmetic' computes Mitchell's product; {mult.name!r} is not a Mitchell "
                "multiplier. Use path 'auto', 'kernel', 'separable' or 'table'."
            )
        # The PyTorch path (any device): Mitchell by arithmetic (no table), separable when the
        # table's error is low-rank, else weight-specific tables.
        torch_path = path if path in ("reference", "separable", "table", "arithmetic") else None
        if torch_path is None:
            if isinstance(mult, MitchellMultiplier):
                torch_path = "arithmetic"
            else:
                torch_path = "separable" if SeparableProducts.usable(table, values) else "table"
        self._arithmetic = (
            MitchellProducts(mult) if torch_path == "arithmetic" and isinstance(mult, MitchellMultiplier) else None
        )
        self._torch_path = torch_path
        self._lut = torch.from_numpy(np.array(table, dtype=np.int64))  # a writable copy
        self._separable = SeparableProducts(table, values) if torch_path == "separable" else None
        # signed tables (zero point 0): one lookup + one conv, when the sums fit float32
        self._fused = (
            FusedSeparable(self._separable, values, table) if self._separable is not None and mult.signed else None
        )
        if self._fused is not None and not self._fused.fits(self._terms_per_output()):
            self._fused = None
        self._tables = TableProducts(self._lut) if torch_path == "table" else None
        # The compiled kernel (CPU): auto takes it unless the table needs no lookup at all
        # (a circuit ignoring activation LSBs: one floor and an ordinary conv is faster).
        no_lookup = self._fused is not None and self._fused.shift is not None
        self._kernel: ModuleType | None = None
        self._kernel_tables: KernelTables | None = None
        if path == "kernel" or (path == "auto" and not no_lookup and len(values) <= 256):
            kernel_tables = KernelTables(table, mult.signed)
            module = load_kernel() if len(values) <= 256 and kernel_tables.fits(self._terms_per_output()) else None
            if module is not None:
                self._kernel, self._kernel_tables = module, kernel_tables
        self.path = "kernel" if self._kernel is not None else torch_path
        # Training forward: the bit-exact emulation, or the fitted error model (dse.emulation.error_model)
        self.training_forward: Literal["bit_exact", "error_model"] = "bit_exact"
        self.error_stats: ErrorStats | None = None
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
                "(dse.transform.apply_assignment does both)."
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
                return _StraightThrough.apply(x, self.weight, self.bias, self)
            return self._emulate(x)

    def _emulate(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
            self.error_stats = ErrorStats.fit(exact, approx, self._channel_dim)
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


class ApproxConv2d(_Emulated, nn.Conv2d):
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

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
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
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
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
        x_sum = None
        if self._torch_path == "reference":
            acc = lut_conv2d_reference(
                self._index(xq), w["w_idx"], self._lut.to(x.device), stride, dilation, self.groups
            )
        elif self._torch_path == "arithmetic":
            assert self._arithmetic is not None
            acc = self._arithmetic.conv2d(xq, w["wq"], stride, dilation, self.groups)
        elif self._torch_path == "table":
            assert self._tables is not None
            acc = self._tables.conv2d(self._index(xq), w["w_idx"], stride, dilation, self.groups)
        else:
            assert self._separable is not None
            acc = self._separable.conv2d(
                xq, self._index(xq), w["wq"], w.get("w_factors"), stride, dilation, self.groups
            )
        if not self.signed and x_sum is None:
            ones = torch.ones(
                self.groups, self.in_channels // self.groups, *self.kernel_size, device=x.device, dtype=torch.float64
            )
            x_sum = F.conv2d(xq.double(), ones, None, stride, 0, dilation, self.groups)
            x_sum = x_sum.repeat_interleave(self.out_channels // self.groups, dim=1)
        return self._finish(acc, x_sum, zero, scale, w, tuple(acc.shape))


class _StraightThrough(torch.autograd.Function):
    """Forward: the emulated (bit-exact) layer. Backward: the exact layer's gradient at the
    quantized operands (straight through the rounding; zero outside the activation range)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: _Emulated
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


class ApproxLinear(_Emulated, nn.Linear):  # type: ignore[misc]  # torch types Linear.bias as Parameter, Conv2d.bias as Tensor | None
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
        x_sum = None
        if self._torch_path == "reference":
            acc = lut_linear_reference(self._index(xq), w["w_idx"], self._lut.to(x.device))
        elif self._torch_path == "arithmetic":
            assert self._arithmetic is not None
            acc = self._arithmetic.linear(xq, w["wq"])
        elif self._torch_path == "table":
            assert self._tables is not None
            acc = self._tables.linear(self._index(xq), w["w_idx"])
        else:
            assert self._separable is not None
            acc = self._separable.linear(xq, self._index(xq), w["wq"], w.get("w_factors"))
        if not self.signed and x_sum is None:
            x_sum = xq.double().sum(dim=1, keepdim=True)
        return self._finish(acc, x_sum, zero, scale, w, tuple(acc.shape)).reshape(*lead, -1)


def approximate_layer(
    module: nn.Module,
    multiplier: Multiplier | str,
    path: EmulationPath = "auto",
    per_channel: bool = True,
    name: str = "",
    bits: int | None = None,
    signed: bool | None = None,
) -> ApproxConv2d | ApproxLinear:
    """The emulated twin of a Conv2d or Linear (same weights, same state_dict keys + act_range).

    ``bits``/``signed``, when given, must match the multiplier's operands (else a ConfigError).
    """
    if isinstance(module, nn.Conv2d):
        return ApproxConv2d.from_conv(module, multiplier, path, per_channel, name, bits, signed)
    if isinstance(module, nn.Linear):
        return ApproxLinear.from_linear(module, multiplier, path, per_channel, name, bits, signed)
    raise ConfigError(f"Layer {name!r} is a {type(module).__name__}; only Conv2d and Linear take a multiplier.")


def training_memory_format(net: nn.Module) -> torch.memory_format:
    """The layout a network with emulated layers trains fastest in on this device's paths.

    The compiled kernel reads its operands in NCHW, so a network with bit-exact kernel layers
    trains faster in ``contiguous_format`` (channels_last would convert around every such
    layer; measured on MobileNetV2, mul8s_1KV9: 3.4x vs 4.5x the exact step); everything
    else (PyTorch convolutions, the error model) prefers ``channels_last``.
    """
    for m in net.modules():
        if isinstance(m, _Emulated) and m.path == "kernel" and m.training_forward == "bit_exact":
            return torch.contiguous_format
    return torch.channels_last
