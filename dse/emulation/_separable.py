"""The separable fast path: exact product plus a low-rank integer error correction.

``lut[a, b] = a*b + E[a, b]`` and ``E = A @ B`` with integer factors
(:mod:`._factorization`), so for any conv

    sum_k lut[x_k, w_k] = conv(x, w) + sum_r conv(A_r[x], B_r[w])

The r correction inputs are stacked as channels of *one* convolution (depthwise:
one depthwise conv over the r*C stacked channels, summed over r after), and
every sum is kept below float32's exact range (:mod:`._exact_sums`), so the
result equals the reference bit for bit. Cost: 1 + r ordinary convolutions.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ._exact_sums import exact_conv2d, exact_linear
from ._factorization import integer_factorization

__all__ = ["SeparableProducts", "FusedSeparable", "MAX_SEPARABLE_RANK", "factorize"]

MAX_SEPARABLE_RANK = 8  # above this, the table path is cheaper


def _tightest_factors(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Integer factors of ``matrix`` from its row or its column lattice, whichever has the
    smaller worst-case partial sum ``max |A| @ |B|`` (both have rank(matrix) rows)."""
    best = None
    for transpose in (False, True):
        try:
            a, b = integer_factorization(matrix.T if transpose else matrix)
        except OverflowError:
            continue
        if transpose:
            a, b = b.T, a.T
        bound = float((np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)).max()) if b.shape[0] else 0.0
        if best is None or bound < best[0]:
            best = (bound, a, b)
    return best


@functools.lru_cache(maxsize=128)
def _factorize(lut_bytes: bytes, size: int, value_bytes: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    lut = np.frombuffer(lut_bytes, dtype=np.int64).reshape(size, size)
    values = np.frombuffer(value_bytes, dtype=np.int64)
    error = lut - np.outer(values, values)
    if int(np.linalg.matrix_rank(error.astype(np.float64))) > MAX_SEPARABLE_RANK:
        return None
    best = _tightest_factors(error)
    if best is None or best[0] * 25 >= 2**24:  # one channel of a 5x5 kernel must stay exact in float32
        return None
    return best[1], best[2]


@functools.lru_cache(maxsize=128)
def _factorize_table(lut_bytes: bytes, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer factors of the whole table: rank(lut) is often below 1 + rank(lut - a*b)."""
    lut = np.frombuffer(lut_bytes, dtype=np.int64).reshape(size, size)
    if int(np.linalg.matrix_rank(lut.astype(np.float64))) > MAX_SEPARABLE_RANK + 1:
        return None
    best = _tightest_factors(lut)
    return None if best is None else (best[1], best[2])


def factorize(lut: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer factors (A, B) of ``lut - values x values``, the smaller of the row and column
    lattices; None when the rank exceeds MAX_SEPARABLE_RANK or the factors are too large for
    exact float32 sums. Cached per table: every trial builds its layers anew."""
    lut, values = np.ascontiguousarray(lut, dtype=np.int64), np.ascontiguousarray(values, dtype=np.int64)
    return _factorize(lut.tobytes(), lut.shape[0], values.tobytes())


class SeparableProducts:
    """Sums of a table's products as 1 + rank convolutions.

    Args:
        lut: int64 table (S x S), indexed by operand bit pattern.
        values: operand value of each index (S,).
    """

    def __init__(self, lut: np.ndarray, values: np.ndarray) -> None:
        factors = factorize(lut, values)
        if factors is None:
            raise OverflowError(
                "this table's error has rank > 8 or integer factors too large for exact float32 sums; "
                "use path='table' (path='auto' does)"
            )
        a, b = factors
        self.rank = b.shape[0]
        self.max_exact_term = float(np.abs(values).max() ** 2)
        self.max_error_term = float((np.abs(a) @ np.abs(b)).max()) if self.rank else 0.0
        # row r holds A_r for every activation index / B_r for every weight index
        self._a = torch.from_numpy(a.T.astype(np.float32)).contiguous()  # (r, S)
        self._b = torch.from_numpy(b.astype(np.float32)).contiguous()  # (r, S)
        self._size = lut.shape[0]

    @staticmethod
    def usable(lut: np.ndarray, values: np.ndarray) -> bool:
        """True when this path is exact and pays off for the table (low rank, small integer factors)."""
        return factorize(lut, values) is not None

    def to(self, device: torch.device) -> SeparableProducts:
        self._a, self._b = self._a.to(device), self._b.to(device)
        return self

    def _activation_factors(self, x_idx: torch.Tensor) -> torch.Tensor:
        """(N, r, C, ...) = A_r[x]: one gather into the stacked layout."""
        flat = self._a.to(x_idx.device).reshape(-1)
        offsets = (torch.arange(self.rank, device=x_idx.device) * self._size).view(1, -1, *([1] * (x_idx.dim() - 1)))
        return flat[x_idx.unsqueeze(1) + offsets]

    def weight_factors(self, w_idx: torch.Tensor) -> torch.Tensor:
        """(r, *w.shape) = B_r[w] (computed once per weight tensor)."""
        return self._b.to(w_idx.device)[:, w_idx]

    def conv2d(
        self,
        x_val: torch.Tensor,
        x_idx: torch.Tensor,
        w_val: torch.Tensor,
        w_factors: torch.Tensor | None,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> torch.Tensor:
        exact = exact_conv2d(x_val, w_val, stride, dilation, groups, self.max_exact_term)
        if self.rank == 0 or w_factors is None:
            return exact
        n, c, h, w = x_idx.shape
        o, cg, kh, kw = w_val.shape
        r = self.rank
        ux = self._activation_factors(x_idx)  # (N, r, C, H, W)
        if groups == 1:
            x_stack = ux.reshape(n, r * c, h, w)
            w_stack = w_factors.permute(1, 0, 2, 3, 4).reshape(o, r * c, kh, kw)
            correction = exact_conv2d(x_stack, w_stack, stride, dilation, 1, self.max_error_term)
        elif cg == 1:  # depthwise (channel multiplier o // c): a depthwise conv over r*C channels
            x_stack = ux.reshape(n, r * c, h, w)
            w_stack = w_factors.reshape(r * o, 1, kh, kw)
            stacked = exact_conv2d(x_stack, w_stack, stride, dilation, r * c, self.max_error_term)
            correction = stacked.view(n, r, o, *stacked.shape[-2:]).sum(dim=1)
        else:  # grouped: put each group's r copies together
            x_stack = ux.view(n, r, groups, cg, h, w).transpose(1, 2).reshape(n, groups * r * cg, h, w)
            w_stack = w_factors.view(r, groups, o // groups, cg, kh, kw).permute(1, 2, 0, 3, 4, 5).reshape(o, r * cg, kh, kw)
            correction = exact_conv2d(x_stack, w_stack, stride, dilation, groups, self.max_error_term)
        if exact.dtype != correction.dtype:
            return exact.double() + correction.double()
        return exact + correction

    def linear(self, x_val: torch.Tensor, x_idx: torch.Tensor, w_val: torch.Tensor, w_factors: torch.Tensor | None) -> torch.Tensor:
        exact = exact_linear(x_val, w_val, self.max_exact_term)
        if self.rank == 0 or w_factors is None:
            return exact
        n, k = x_idx.shape
        ux = self._activation_factors(x_idx).reshape(n, self.rank * k)  # (N, r*K)
        w_stack = w_factors.permute(1, 0, 2).reshape(w_val.shape[0], self.rank * k)
        correction = exact_linear(ux, w_stack, self.max_error_term)
        if exact.dtype != correction.dtype:
            return exact.double() + correction.double()
        return exact + correction


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
        act = np.concatenate([values[:, None], separable._a.numpy().T.astype(np.int64)], axis=1)
        wgt = np.concatenate([values[:, None], separable._b.numpy().T.astype(np.int64)], axis=1)
        lut = np.ascontiguousarray(lut, dtype=np.int64)
        direct = _factorize_table(lut.tobytes(), lut.shape[0])
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
        return terms_per_output * self.max_term < 2**24 or 25 * self.max_term < 2**24

    def _channel_chunks(self, channels: int, taps: int) -> list[tuple[int, int]]:
        """Input-channel ranges whose sums stay exact in float32."""
        per_chunk = max(1, int((2**24 - 1) // (taps * self.max_term)))
        return [(lo, min(channels, lo + per_chunk)) for lo in range(0, channels, per_chunk)]

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

    def conv2d(self, idx: torch.Tensor, w_stack: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int], groups: int, out_channels: int) -> torch.Tensor:
        n, c = idx.shape[:2]
        x = self.stacked_input(idx)
        if groups == c and groups > 1 and self.ranks > 1:  # depthwise: one depthwise conv over C*R channels, then sum R
            m = out_channels // c
            w_dw = w_stack.view(c, m, self.ranks, *w_stack.shape[-2:]).transpose(1, 2).reshape(c * self.ranks * m, 1, *w_stack.shape[-2:])
            y = F.conv2d(x, w_dw, None, stride, padding, dilation, c * self.ranks)  # channel (c*R + rho)*m + j
            h, w = y.shape[-2:]
            y = y.permute(0, 2, 3, 1).reshape(n, h, w, c, self.ranks, m).sum(dim=4)
            return y.reshape(n, h, w, out_channels).permute(0, 3, 1, 2)
        cg = w_stack.shape[1] // self.ranks
        chunks = self._channel_chunks(cg, w_stack.shape[-2] * w_stack.shape[-1])
        if len(chunks) == 1:
            return F.conv2d(x, w_stack, None, stride, padding, dilation, groups)
        if groups != 1:  # grouped with huge groups: exact in float64
            return F.conv2d(x.double(), w_stack.double(), None, stride, padding, dilation, groups)
        r = self.ranks
        out = None
        for lo, hi in chunks:  # whole channels: their R factors are adjacent (channel-major)
            part = F.conv2d(x[:, lo * r : hi * r], w_stack[:, lo * r : hi * r], None, stride, padding, dilation).double()
            out = part if out is None else out.add_(part)
        assert out is not None
        return out

    def linear(self, idx: torch.Tensor, w_stack: torch.Tensor) -> torch.Tensor:
        rows = idx if idx.is_floating_point() else F.embedding(idx, self.act_rows.to(idx.device)).reshape(idx.shape[0], -1)
        chunks = self._channel_chunks(idx.shape[1], 1)
        if len(chunks) == 1:
            return F.linear(rows, w_stack)
        r = self.ranks
        return sum(F.linear(rows[:, lo * r : hi * r], w_stack[:, lo * r : hi * r]).double() for lo, hi in chunks)  # type: ignore[return-value]
