"""The separable fast path: exact product plus a low-rank integer error correction.

``lut[a, b] = a*b + E[a, b]`` and ``E = A @ B`` with integer factors
(:mod:`._factorization`), so for any conv

    sum_k lut[x_k, w_k] = conv(x, w) + sum_r conv(A_r[x], B_r[w])

The r correction inputs are stacked as channels of *one* convolution (depthwise:
one depthwise conv over the r*C stacked channels, summed over r after), and
every sum is kept below float32's exact range (:mod:`._exact_sums`), so the
result equals the reference bit for bit. Cost: 1 + r ordinary convolutions.
Signed tables take the fused form of the same factors (:mod:`._fused`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ._exact_sums import FLOAT32_EXACT, exact_conv2d, exact_linear
from ._factorization import integer_factorization

__all__ = ["MAX_SEPARABLE_RANK", "SeparableProducts", "factorize", "factorize_table"]

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
    if best is None or best[0] * 25 >= FLOAT32_EXACT:  # one channel of a 5x5 kernel must stay exact in float32
        return None
    return best[1], best[2]


@functools.lru_cache(maxsize=128)
def _factorize_table(lut_bytes: bytes, size: int) -> tuple[np.ndarray, np.ndarray] | None:
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


def factorize_table(lut: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer factors (A, B) of the whole table, ``lut = A @ B`` (rank(lut) is often below
    1 + rank(lut - a*b)); None above MAX_SEPARABLE_RANK + 1 rows. Cached per table."""
    lut = np.ascontiguousarray(lut, dtype=np.int64)
    return _factorize_table(lut.tobytes(), lut.shape[0])


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
        self.act_factors = torch.from_numpy(a.T.astype(np.float32)).contiguous()  # (r, S)
        self.wgt_factors = torch.from_numpy(b.astype(np.float32)).contiguous()  # (r, S)
        self._size = lut.shape[0]

    @staticmethod
    def usable(lut: np.ndarray, values: np.ndarray) -> bool:
        """True when this path is exact and pays off for the table (low rank, small integer factors)."""
        return factorize(lut, values) is not None

    def to(self, device: torch.device) -> SeparableProducts:
        self.act_factors, self.wgt_factors = self.act_factors.to(device), self.wgt_factors.to(device)
        return self

    def _activation_factors(self, x_idx: torch.Tensor) -> torch.Tensor:
        """(N, r, C, ...) = A_r[x]: one gather into the stacked layout."""
        flat = self.act_factors.to(x_idx.device).reshape(-1)
        offsets = (torch.arange(self.rank, device=x_idx.device) * self._size).view(1, -1, *([1] * (x_idx.dim() - 1)))
        return flat[x_idx.unsqueeze(1) + offsets]

    def weight_factors(self, w_idx: torch.Tensor) -> torch.Tensor:
        """(r, *w.shape) = B_r[w] (computed once per weight tensor)."""
        return self.wgt_factors.to(w_idx.device)[:, w_idx]

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
            w_stack = (
                w_factors.view(r, groups, o // groups, cg, kh, kw).permute(1, 2, 0, 3, 4, 5).reshape(o, r * cg, kh, kw)
            )
            correction = exact_conv2d(x_stack, w_stack, stride, dilation, groups, self.max_error_term)
        if exact.dtype != correction.dtype:
            return exact.double() + correction.double()
        return exact + correction

    def linear(
        self, x_val: torch.Tensor, x_idx: torch.Tensor, w_val: torch.Tensor, w_factors: torch.Tensor | None
    ) -> torch.Tensor:
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
