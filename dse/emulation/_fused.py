"""The fused separable path: one lookup (or a floor) and one convolution per layer.

For signed tables (zero point 0) every operand value maps to a short row of
integers, activations and weights alike, and ``lut[x, w]`` is their dot
product (:mod:`._separable` finds the factors). Sums stay exact in float32 by
chunking whole input channels (:func:`._exact_sums.channel_chunks`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._exact_sums import FLOAT32_EXACT, channel_chunks
from ._separable import SeparableProducts, factorize_table

__all__ = ["FusedSeparable"]


class FusedSeparable:
    """One lookup (or, for LSB-ignoring circuits, a floor) and one convolution per layer,
    for signed tables whose sums fit float32.

    Every operand value v maps to a row of R integers, activations and weights
    alike, and ``lut[x, w]`` is their dot product: ``[v, A_1(v), ..., A_r(v)]`` from
    the error's factors, or the table's own integer factors when they are fewer.
    The activation rows come from ``F.embedding`` on the channels-last index tensor,
    which writes them *channel-major* (channel c's R factors adjacent) straight
    into the layout the convolution reads: no permute, no copy. Exact while
    ``K * max|row . row| < 2^24``; callers check :meth:`fits`.
    """

    def __init__(self, separable: SeparableProducts, values: np.ndarray, lut: np.ndarray) -> None:
        order = np.argsort(values)  # rows in value order: index = value - min(value)
        self.offset = int(-values.min())
        self.size = len(values)
        # rows [v, A_1(v), ..] / [v, B_1(v), ..] of the error's factors, or the table's own integer
        # factors when they are fewer (e.g. mul8s_1L2J = floor(x/2) * g(w): one row, one plain conv)
        act = np.concatenate([values[:, None], separable.act_factors.numpy().T.astype(np.int64)], axis=1)
        wgt = np.concatenate([values[:, None], separable.wgt_factors.numpy().T.astype(np.int64)], axis=1)
        direct = factorize_table(lut)
        if direct is not None and direct[1].shape[0] < act.shape[1]:
            act, wgt = direct[0], direct[1].T
        # One row that is c * floor(v / 2^k) (a circuit ignoring k activation LSBs): c moves to the
        # weights and the row is computed from the values by a power-of-two scale and floor, no lookup.
        self.shift: int | None = None
        if act.shape[1] == 1:
            for k in range(int(np.abs(values).max()).bit_length()):
                truncated = np.floor_divide(values, 2**k)
                c = act[np.argmax(truncated != 0), 0] // max(1, truncated[np.argmax(truncated != 0)])
                if c and np.array_equal(act[:, 0], c * truncated):
                    act, wgt, self.shift = truncated[:, None], wgt * c, k
                    break
        self.ranks = act.shape[1]
        self.act_rows = torch.from_numpy(act[order].astype(np.float32))
        self.wgt_rows = torch.from_numpy(wgt[order].astype(np.float32))
        self.max_term = float((np.abs(act).astype(np.float64) @ np.abs(wgt).astype(np.float64).T).max())
        self.zero_row_is_zero = bool(np.all(act[order][self.offset] == 0))  # value 0 -> zero padding is exact

    def to(self, device: torch.device) -> FusedSeparable:
        self.act_rows, self.wgt_rows = self.act_rows.to(device), self.wgt_rows.to(device)
        return self

    def fits(self, terms_per_output: int) -> bool:
        """One kernel tap of one channel must be exact on its own (then chunks can cover any K)."""
        return terms_per_output * self.max_term < FLOAT32_EXACT or 25 * self.max_term < FLOAT32_EXACT

    def index(self, q: torch.Tensor) -> torch.Tensor:
        """int32 row index of integer-valued operands ``q`` (``q`` is consumed: shifted in place)."""
        return q.add_(self.offset).to(torch.int32)

    def weight_stack(self, wq: torch.Tensor) -> torch.Tensor:
        """Weights as the conv/linear weight of the stacked (channel-major) input."""
        rows = self.wgt_rows.to(wq.device)[self.index(wq.clone()).long()]  # (*w.shape, R)
        if wq.dim() == 2:  # linear (O, K) -> (O, K*R)
            return rows.reshape(wq.shape[0], -1)
        o, cg, kh, kw = wq.shape
        rows = rows.permute(0, 1, 4, 2, 3)  # (O, Cg, R, kh, kw)
        return rows.reshape(o, cg * self.ranks, kh, kw)  # depthwise: (O, R, kh, kw), regrouped in conv2d

    def shifted_values(self, q: torch.Tensor) -> torch.Tensor:
        """The one factor row of integer-valued operands ``q`` (consumed): floor(q / 2^shift), exact."""
        assert self.shift is not None
        return q.mul_(2.0**-self.shift).floor_() if self.shift else q

    def stacked_input(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, C*R, H, W) channels-last factors of an (N, C, H, W) index tensor (float input: already factors)."""
        if idx.is_floating_point():
            return idx
        n, c, h, w = idx.shape
        rows = F.embedding(idx.permute(0, 2, 3, 1), self.act_rows.to(idx.device))  # (N, H, W, C, R)
        return rows.reshape(n, h, w, c * self.ranks).permute(0, 3, 1, 2)

    def conv2d(
        self,
        idx: torch.Tensor,
        w_stack: torch.Tensor,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        out_channels: int,
    ) -> torch.Tensor:
        n, c = idx.shape[:2]
        x = self.stacked_input(idx)
        if groups == c and groups > 1 and self.ranks > 1:  # depthwise: one depthwise conv over C*R channels, then sum R
            m = out_channels // c
            w_dw = (
                w_stack.view(c, m, self.ranks, *w_stack.shape[-2:])
                .transpose(1, 2)
                .reshape(c * self.ranks * m, 1, *w_stack.shape[-2:])
            )
            y = F.conv2d(x, w_dw, None, stride, padding, dilation, c * self.ranks)  # channel (c*R + rho)*m + j
            h, w = y.shape[-2:]
            y = y.permute(0, 2, 3, 1).reshape(n, h, w, c, self.ranks, m).sum(dim=4)
            return y.reshape(n, h, w, out_channels).permute(0, 3, 1, 2)
        cg = w_stack.shape[1] // self.ranks
        chunks = channel_chunks(cg, w_stack.shape[-2] * w_stack.shape[-1], self.max_term)
        if len(chunks) == 1:
            return F.conv2d(x, w_stack, None, stride, padding, dilation, groups)
        if groups != 1:  # grouped with huge groups: exact in float64
            return F.conv2d(x.double(), w_stack.double(), None, stride, padding, dilation, groups)
        r = self.ranks
        out = None
        for lo, hi in chunks:  # whole channels: their R factors are adjacent (channel-major)
            part = F.conv2d(
                x[:, lo * r : hi * r], w_stack[:, lo * r : hi * r], None, stride, padding, dilation
            ).double()
            out = part if out is None else out.add_(part)
        assert out is not None
        return out

    def linear(self, idx: torch.Tensor, w_stack: torch.Tensor) -> torch.Tensor:
        rows = (
            idx if idx.is_floating_point() else F.embedding(idx, self.act_rows.to(idx.device)).reshape(idx.shape[0], -1)
        )
        chunks = channel_chunks(idx.shape[1], 1, self.max_term)
        if len(chunks) == 1:
            return F.linear(rows, w_stack)
        r = self.ranks
        return sum(F.linear(rows[:, lo * r : hi * r], w_stack[:, lo * r : hi * r]).double() for lo, hi in chunks)  # type: ignore[return-value]
