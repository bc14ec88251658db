"""The table path: exact for *any* table, by weight-specific lookup tables.

Weights are fixed at inference, so for weight position k the row
``T[k, v, :] = lut[v, w[:, k]]`` over all activation values v is precomputed;
a conv is then, per output pixel, the sum over k of rows ``T[k, x_k, :]``:
``embedding_bag(mode="sum")`` over a (K*S, C_out) table. Depthwise convs use a
gather + sum per channel instead of a loop over groups (AdaPT's slow path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._exact_sums import accumulator_dtype
from .reference import conv_output_size

__all__ = ["TableProducts"]

_MAX_TABLE_ELEMENTS = 2**26  # 256 MiB of float32 per built table; larger ones go out-channel chunk by chunk


class TableProducts:
    """Sums of ``lut[x, w]`` through precomputed weight-specific tables."""

    def __init__(self, lut: torch.Tensor) -> None:
        self.lut = lut.long()
        self.size = lut.shape[0]
        self.max_term = float(lut.abs().max())

    def _unfold(
        self, x_idx: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
    ) -> torch.Tensor:
        return F.unfold(x_idx.float(), kernel, dilation=dilation, stride=stride).long()  # indices < 2^24: exact

    def conv2d(
        self, x_idx: torch.Tensor, w_idx: torch.Tensor, stride: tuple[int, int], dilation: tuple[int, int], groups: int
    ) -> torch.Tensor:
        n, c, h, w = x_idx.shape
        o, cg, kh, kw = w_idx.shape
        k = cg * kh * kw
        h_out, w_out = conv_output_size((h, w), (kh, kw), stride, dilation)
        dtype = accumulator_dtype(k, self.max_term)
        cols = self._unfold(x_idx, (kh, kw), stride, dilation)  # (N, C*K', L)
        lut_t = self.lut.to(x_idx.device).t().to(dtype)  # lut_t[b, a] = lut[a, b]
        if cg == 1 and groups == c:  # depthwise, channel multiplier m
            m = o // c
            table = lut_t[w_idx.view(c, m, k)]  # (C, m, K, S): lut[a, w[c*m+j, k]]
            base = (torch.arange(c * m * k, device=x_idx.device) * self.size).view(1, c, m, k, 1)
            index = cols.view(n, c, 1, k, -1) + base
            out = table.reshape(-1)[index].sum(dim=3)  # (N, C, m, L)
            return out.reshape(n, o, h_out, w_out)
        og = o // groups
        cols = cols.view(n, groups, k, -1).permute(0, 1, 3, 2)  # (N, g, L, K)
        offsets = torch.arange(k, device=x_idx.device) * self.size
        out = torch.empty(n, o, cols.shape[2], dtype=dtype, device=x_idx.device)
        step = max(1, _MAX_TABLE_ELEMENTS // (k * self.size))
        for g in range(groups):
            index = (cols[:, g] + offsets).reshape(-1, k)  # (N*L, K)
            for lo in range(0, og, step):
                ws = w_idx[g * og + lo : g * og + min(og, lo + step)].reshape(-1, k)  # (Oc, K)
                table = lut_t[ws].permute(1, 2, 0).reshape(k * self.size, -1)  # (K*S, Oc)
                bag = F.embedding_bag(index, table, mode="sum")  # (N*L, Oc)
                out[:, g * og + lo : g * og + lo + ws.shape[0]] = bag.view(n, -1, ws.shape[0]).transpose(1, 2)
        return out.view(n, o, h_out, w_out)

    def linear(self, x_idx: torch.Tensor, w_idx: torch.Tensor) -> torch.Tensor:
        n, k = x_idx.shape
        out = self.conv2d(x_idx.view(n, k, 1, 1), w_idx.view(w_idx.shape[0], k, 1, 1), (1, 1), (1, 1), 1)
        return out.view(n, -1)
